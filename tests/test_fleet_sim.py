"""The fleet simulator with real swtpm nodes beside the fakes: 100 software nodes (fakes, load
generation only) and two swtpm nodes running the real agent (enrollment with credential
activation, then ``agent.node.run``) against one gunicorn verifier. The real agents use the next
nonce of each answer: one challenge for all their rounds, and their re-attestations are counted
on the boot's record."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.client import VerifierClient
from agent.config import AgentConfig
from agent.node import RunStats, enroll, run
from testkit import fleet, swtpm
from testkit.bootsim import simulate_boot
from testkit.service import serve
from tests.test_fleet_reliability import LOGS
from verifier.service.config import ServiceConfig
from verifier.service.context import Services
from verifier.store import Store, repo, upgrade

pytestmark = pytest.mark.swtpm


class CountingClient(VerifierClient):
    challenges = 0

    def challenge(self, node: str, event_log_sha256: bytes | None = None) -> Any:
        self.challenges += 1
        return super().challenge(node, event_log_sha256)


def _real_node(base: Path, ca: Path, url: str, name: str, token: str) -> tuple[AgentConfig, Any]:
    own = swtpm.provision(base / f"tpm-{name}", ca)
    tpm = swtpm.start(own, startup=False)
    simulate_boot(tpm.tcti, LOGS[0], eventlog_out=tpm.eventlog)
    config = AgentConfig(
        tcti=tpm.tcti, state_dir=base / f"agent-{name}", eventlog=tpm.eventlog, verifier=url,
        node=name, enroll_token=token, interval=0.3,
    )  # fmt: skip
    return config, tpm


def test_fakes_and_real_swtpm_nodes_attest_side_by_side(tmp_path: Path) -> None:
    swtpm.provision(tmp_path / "factory", tmp_path / "ca")
    swtpm.export_ca(tmp_path / "ca", tmp_path / "vendor-ca")
    url = str(tmp_path / "v.db")
    store = Store(url)
    upgrade(store)
    config = ServiceConfig(
        database=url, ek_ca_dir=str(tmp_path / "vendor-ca"), client_rate=1e9, client_burst=1e9,
        attest_interval=1.0, workers=2,
    )  # fmt: skip
    fleet.install_golden(Services(config=config, store=store), LOGS)
    spec = fleet.FleetSpec(nodes=100, seconds=5, interval=1.0, concurrency=8)
    agents = fleet.make_agents(spec, LOGS)
    fleet.enroll_many(store, agents)
    with store.write() as db:
        token, _ = repo.create_token(db, "enroll", expires_at=None)
    started = []
    with serve(config) as served:
        stats: dict[str, RunStats] = {}
        clients: dict[str, CountingClient] = {}

        def real(name: str) -> None:
            cfg, tpm = _real_node(tmp_path, tmp_path / "ca", served.url, name, token)
            started.append(tpm)
            client = clients[name] = CountingClient(served.url, timeout=30)
            enroll(cfg, client)
            stats[name] = run(cfg, client, iterations=4, sleep=lambda s: time.sleep(0.3))

        threads = [threading.Thread(target=real, args=(f"swtpm-{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        tally = fleet.Tally()
        fleet.phase_first([served.url], agents, spec, tally)
        fleet.phase_steady([served.url], agents, spec, tally, LOGS)
        for t in threads:
            t.join(timeout=120)
        admin = _admin(store)
        timelines = {
            n: requests.get(
                f"{served.url}/v1/nodes/{n}/attestations", headers=admin, timeout=10
            ).json()
            for n in stats
        }
    for tpm in started:
        swtpm.stop(tpm)
    assert sum(tally.errors.values()) == 0, tally.errors
    assert tally.kinds["first"] >= 100 and tally.kinds["re"] > 100
    for name, st in stats.items():
        assert (st.attestations, st.failures) == (4, 0), name
        assert st.last is not None and st.last.status == "trusted"
        assert clients[name].challenges == 1, name  # the next nonce did the rest
        [entry] = timelines[name]["attestations"]  # one boot: one record, three repeats
        assert entry["repeats"]["count"] == 3, entry
    store.close()


def _admin(store: Store) -> dict[str, str]:
    with store.write() as db:
        token, _ = repo.create_token(db, "admin", expires_at=None)
    return {"Authorization": f"Bearer {token}"}
