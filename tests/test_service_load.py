"""50 concurrent clients against 2 gunicorn workers on SQLite: no error, nothing lost or doubled.

The clients are ``FakeAgentForLoad`` (software AKs enrolled straight into the store): load
generation only. What is checked is the service and the store under concurrency: every request
answered 200, exactly one attestation row per round trip, each node's state equal to its last
verdict, and the event log stored once per distinct log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.yamlfmt import dump_yaml
from testkit.service import FakeAgentForLoad, run_server
from tests.conftest import CORPUS
from verifier.service import ServiceConfig, golden_ops
from verifier.service.context import Services
from verifier.store import Store, repo, upgrade
from verifier.store.models import Attestation, AttestationRepeat, EventLogBlob

SB_LOG = CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin"
CLIENTS = 50
ROUNDS = 3


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Store, list[FakeAgentForLoad]]]:
    db = str(tmp_path / "load.db")
    store = Store(db)
    upgrade(store)
    config = ServiceConfig(database=db, workers=2)
    log = SB_LOG.read_bytes()
    gs = capture(
        assume_quoted_for_review(parse_event_log(log), HashAlg.SHA256), name="fleet", version="1"
    )
    svc = Services(config=config, store=store)
    golden_ops.upload(svc, "yaml", dump_yaml(gs).encode(), "test")
    golden_ops.assign(svc, "fleet", {}, "test")
    agents = [FakeAgentForLoad(f"load-{i:02d}", log) for i in range(CLIENTS)]
    for i, a in enumerate(agents):
        if i % 10 == 9:  # every tenth node was tampered with: an extra PCR extend
            a.extra_extend = b"rootkit"
        a.enroll_directly(store)
    with run_server(config) as url:
        yield url, store, agents
    store.close()


def test_fifty_clients_two_workers_no_error_no_lost_or_duplicated_attestation(
    served: tuple[str, Store, list[FakeAgentForLoad]],
) -> None:
    url, store, agents = served
    results: dict[str, list[dict[str, object]]] = {a.name: [] for a in agents}
    errors: list[BaseException] = []
    barrier = threading.Barrier(CLIENTS)

    def client(agent: FakeAgentForLoad) -> None:
        try:
            with requests.Session() as session:
                barrier.wait()
                for _ in range(ROUNDS):
                    results[agent.name].append(agent.attest(session, url))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(a,)) for a in agents]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert errors == []
    statuses = [r["http_status"] for rs in results.values() for r in rs]
    assert statuses == [200] * (CLIENTS * ROUNDS), {s for s in statuses}
    # Issue 14: an unchanged re-attestation is counted on its boot's full record, so each
    # accepted request is named by (attestation_id, repeat).
    ids = [(str(r["attestation_id"]), r["repeat"]) for rs in results.values() for r in rs]
    assert len(set(ids)) == CLIENTS * ROUNDS  # none duplicated
    with store.read() as db:
        full = db.scalar(select(func.count()).select_from(Attestation)) or 0
        repeats = db.scalar(select(func.coalesce(func.sum(AttestationRepeat.count), 0))) or 0
        assert full + repeats == CLIENTS * ROUNDS
        assert db.scalar(select(func.count()).select_from(EventLogBlob)) == 1
        for agent in agents:
            node = repo.get_node(db, agent.name)
            assert node is not None
            last = results[agent.name][-1]
            assert str(node.last_attestation_id) == last["attestation_id"]  # none lost
            want = "untrusted" if agent.extra_extend else "trusted"
            assert node.state == last["status"] == want, (agent.name, node.reason)
            rows = repo.node_attestations(db, node.id)
            assert sorted(str(r.id) for r in rows) == sorted(
                {str(r["attestation_id"]) for r in results[agent.name]}
            )
    print(
        f"\n{CLIENTS * ROUNDS} attestations in {elapsed:.2f} s "
        f"({CLIENTS * ROUNDS / elapsed:.1f}/s) with 2 workers on SQLite"
    )
