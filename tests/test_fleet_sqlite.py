"""Issue 14 on SQLite: 4 gunicorn workers and 200 concurrent clients (software nodes:
FakeAgentForLoad, fakes) — no "database is locked", no attestation lost or stored twice."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import func, select

from testkit import fleet
from testkit.service import FakeAgentForLoad, serve
from tests.test_fleet_reliability import LOGS, Result, _round
from verifier.service.config import ServiceConfig
from verifier.service.context import Services
from verifier.store import Store, upgrade
from verifier.store.models import Attestation, AttestationRepeat

CLIENTS, ROUNDS = 200, 3


def test_four_workers_and_200_clients_never_see_database_is_locked(tmp_path: Path) -> None:
    url = str(tmp_path / "v.db")
    store = Store(url)
    upgrade(store)
    config = ServiceConfig(database=url, workers=4, client_rate=1e9, client_burst=1e9)
    fleet.install_golden(Services(config=config, store=store), LOGS)
    agents = [FakeAgentForLoad(f"sq-{i:03d}", LOGS[0]) for i in range(CLIENTS)]
    fleet.enroll_many(store, agents)
    results: list[Result] = []
    lock = threading.Lock()
    with serve(config) as served:
        barrier = threading.Barrier(CLIENTS)

        def client(agent: FakeAgentForLoad) -> None:
            http = fleet.Client([served.url], timeout=60)
            barrier.wait()
            for _ in range(ROUNDS):
                out = _round(http, 0, agent)
                with lock:
                    results.append(out)

        threads = [threading.Thread(target=client, args=(a,)) for a in agents]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert [(r.status, r.code) for r in results if r.status != 200] == []
    assert len(results) == CLIENTS * ROUNDS
    named = {(r.attestation_id, r.repeat) for r in results}
    assert len(named) == CLIENTS * ROUNDS  # none stored twice
    with store.read() as db:
        full = db.scalar(select(func.count()).select_from(Attestation)) or 0
        repeats = db.scalar(select(func.coalesce(func.sum(AttestationRepeat.count), 0))) or 0
    assert full + repeats == CLIENTS * ROUNDS  # none lost
    store.close()
