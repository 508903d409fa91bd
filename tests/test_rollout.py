"""Staged kernel rollouts through the service: which version each node booted (from its verified
log), outdated nodes, revocation that explains itself, rolling forward, canary versions.

Two kernel versions of one golden set ``kernel``: ``a`` approves the Debian log's kernel, ``b`` a
kernel of another digest (the same log with that kernel's PCR4 digest). The platform set approves
everything else. Software AKs (testkit FakeAgentForLoad) stand in for TPMs; the VM suite runs the
same story on real boots.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.model import BootApp, GoldenSet, digests
from golden.yamlfmt import dump_yaml
from testkit.service import FakeAgentForLoad
from tests.test_service_api import SB_LOG, T0
from verifier._cli import main as verifier_main
from verifier.service import ServiceConfig, create_app
from verifier.store import Store, repo, upgrade

KERNEL_A = bytes.fromhex("6b1bf35c3bee9918250f593a6fff889c75c1e239cd2fe9e5bb0cd3de9dcb8e51")
KERNEL_B = hashlib.sha256(b"vmlinuz-6.1.0-57-amd64").digest()
LOG_A = SB_LOG.read_bytes()
LOG_B = LOG_A.replace(KERNEL_A, KERNEL_B)
CVE = "CVE-2026-4242: kernel privilege escalation"


def _sets() -> tuple[GoldenSet, GoldenSet, GoldenSet]:
    full = capture(
        assume_quoted_for_review(parse_event_log(LOG_A), HashAlg.SHA256), name="p", version="1"
    )
    kernel = [a for a in full.boot_apps if a.digests.get(HashAlg.SHA256) == KERNEL_A]
    assert kernel, "the Debian log's kernel is among the captured boot applications"
    platform = dataclasses.replace(
        full, name="platform", boot_apps=tuple(a for a in full.boot_apps if a not in kernel)
    )

    def version(v: str, digest: bytes) -> GoldenSet:
        app = BootApp(f"kernel {v}", "kernel", digests({HashAlg.SHA256: digest}))
        return GoldenSet(name="kernel", version=v, boot_apps=(app,))

    return platform, version("a", KERNEL_A), version("b", KERNEL_B)


class Fleet:
    def __init__(self, client: FlaskClient, store: Store, admin: str, db: str) -> None:
        self.client, self.store, self.admin, self.db = client, store, admin, db

    def h(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}

    def upload(self, gs: GoldenSet) -> None:
        h = {**self.h(), "Content-Type": "application/yaml"}
        assert self.client.post("/v1/golden", data=dump_yaml(gs), headers=h).status_code == 201

    def attest(self, agent: FakeAgentForLoad) -> dict[str, Any]:
        ch = self.client.post(f"/v1/nodes/{agent.name}/challenge")
        resp = self.client.post(
            f"/v1/nodes/{agent.name}/evidence",
            data=agent.evidence(bytes.fromhex(ch.json["nonce"])),
            headers={"Content-Type": "application/cbor"},
        )
        assert resp.status_code == 200, resp.json
        return dict(resp.json)

    def node(self, name: str) -> dict[str, Any]:
        return dict(self.client.get(f"/v1/nodes/{name}", headers=self.h()).json)

    def outdated(self) -> dict[str, list[str]]:
        nodes = self.client.get("/v1/nodes?outdated=true", headers=self.h()).json["nodes"]
        return {n["name"]: [f"{o['version']} {o['why']}" for o in n["outdated"]] for n in nodes}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    url = str(tmp_path / "v.db")
    store = Store(url)
    upgrade(store)
    with store.write() as db:
        admin, _ = repo.create_token(db, "admin", expires_at=None, now=T0)
    client = create_app(ServiceConfig(database=url), store=store).test_client()
    f = Fleet(client, store, admin, url)
    for gs in _sets():
        f.upload(gs)
    for name in ("platform", "kernel"):
        resp = client.post(
            "/v1/golden/assignments", json={"golden": name, "selector": {}}, headers=f.h()
        )
        assert resp.status_code == 200
    try:
        yield f
    finally:
        store.close()


def _nodes(f: Fleet) -> tuple[FakeAgentForLoad, FakeAgentForLoad]:
    one, two = FakeAgentForLoad("node-1", LOG_A), FakeAgentForLoad("node-2", LOG_B)
    for agent in (one, two):
        agent.enroll_directly(f.store)
    return one, two


def test_a_staged_rollout_from_kernel_a_to_b(fleet: Fleet) -> None:
    one, two = _nodes(fleet)
    assert fleet.attest(one)["status"] == "trusted"
    assert fleet.attest(two)["status"] == "trusted"
    # Which version each booted, from the verified log: not from any label.
    assert "kernel@a" in fleet.node("node-1")["booted"]
    assert "kernel@b" in fleet.node("node-2")["booted"]
    assert "kernel@b" not in fleet.node("node-1")["booted"]
    assert fleet.outdated() == {"node-1": ["kernel@a superseded"]}
    listed = fleet.client.get("/v1/nodes?booted=kernel@b", headers=fleet.h()).json["nodes"]
    assert [n["name"] for n in listed] == ["node-2"]
    roll = fleet.client.get("/v1/rollouts/kernel", headers=fleet.h()).json
    assert [(v["version"], v["node_names"]) for v in roll["versions"]] == [
        ("a", ["node-1"]),
        ("b", ["node-2"]),
    ]
    assert roll["active"] == ["a", "b"]
    # Revoking A flags node 1 at once, naming the set, version and reason; node 2 stays trusted.
    resp = fleet.client.post("/v1/golden/kernel/a/revoke", json={"reason": CVE}, headers=fleet.h())
    assert resp.status_code == 200
    node1 = fleet.node("node-1")
    assert node1["state"] == "untrusted" and node1["reason"].startswith("golden_revoked")
    assert "kernel@a" in node1["reason"] and CVE in node1["reason"]
    assert fleet.node("node-2")["state"] == "trusted"
    assert fleet.outdated() == {"node-1": ["kernel@a revoked"]}
    # Node 1 rolls forward: it reboots into kernel B and is trusted again.
    one.reboot(LOG_B)
    assert fleet.attest(one)["status"] == "trusted"
    assert fleet.node("node-1")["state"] == "trusted"
    assert "kernel@b" in fleet.node("node-1")["booted"]
    assert fleet.outdated() == {}


def test_a_node_rolled_back_to_a_stays_trusted_while_a_is_active(fleet: Fleet) -> None:
    _, two = _nodes(fleet)
    assert fleet.attest(two)["status"] == "trusted"
    two.reboot(LOG_A)  # the A/B partition still holds kernel A
    assert fleet.attest(two)["status"] == "trusted"
    assert fleet.outdated() == {"node-2": ["kernel@a superseded"]}


def test_a_canary_version_applies_only_to_the_nodes_its_selector_matches(fleet: Fleet) -> None:
    resp = fleet.client.put(
        "/v1/golden/kernel/b/canary", json={"selector": {"canary": "true"}}, headers=fleet.h()
    )
    assert resp.status_code == 200 and resp.json["canary"] == {"canary": "true"}
    one, two = _nodes(fleet)
    assert fleet.attest(one)["status"] == "trusted"
    assert fleet.attest(two)["status"] == "untrusted"  # kernel B, but not a canary node
    assert fleet.outdated() == {}  # B does not apply to node 1: nothing newer for it
    resp = fleet.client.post(
        "/v1/nodes/node-2/labels",
        json={"labels": {"canary": "true"}, "reason": "canary"},
        headers=fleet.h(),
    )
    assert resp.status_code == 200, resp.json
    assert fleet.node("node-2")["state"] == "trusted"  # re-appraised with its new labels
    # Rolled out to every node: node 1 (on A) is now behind.
    resp = fleet.client.delete("/v1/golden/kernel/b/canary", headers=fleet.h())
    assert resp.status_code == 200 and resp.json["canary"] is None
    assert fleet.outdated() == {"node-1": ["kernel@a superseded"]}
    audit = fleet.client.get("/v1/audit", headers=fleet.h()).json["audit"]
    assert [e["action"] for e in audit].count("golden_canary") == 2


def test_cli_lists_outdated_nodes_and_the_rollout(
    fleet: Fleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # one line per row
    one, two = _nodes(fleet)
    fleet.attest(one), fleet.attest(two)
    assert verifier_main(["nodes", "list", "--outdated", "--database", fleet.db, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [n["name"] for n in data["nodes"]] == ["node-1"]
    assert verifier_main(["nodes", "list", "--outdated", "--database", fleet.db]) == 0
    table = capsys.readouterr().out
    assert "node-1" in table and "kernel@a superseded" in table and "node-2" not in table
    assert verifier_main(["golden", "rollout", "kernel", "--database", fleet.db]) == 0
    shown = capsys.readouterr().out
    assert "node-1" in shown and "node-2" in shown


def test_a_bad_outdated_or_booted_query_is_a_400_or_404(fleet: Fleet) -> None:
    bad = fleet.client.get("/v1/nodes?outdated=maybe", headers=fleet.h())
    assert bad.status_code == 400 and bad.json["error"]["code"] == "bad_query"
    assert fleet.client.get("/v1/rollouts/nope", headers=fleet.h()).status_code == 404
    empty = fleet.client.put(
        "/v1/golden/kernel/zz/canary", json={"selector": {}}, headers=fleet.h()
    )
    assert empty.status_code == 400 and empty.json["error"]["code"] == "bad_selector"


def test_booted_versions_intersect_what_each_matching_check_names() -> None:
    from verifier.appraisal import Check, CheckStatus, booted_versions

    P, F = CheckStatus.PASS, CheckStatus.FAIL
    checks = [
        Check("policy.golden_sets", P, "ok", "", golden="k@a, k@b, p@1"),
        Check("secure_boot.enabled", P, "ok", "", golden="k@a, k@b, p@1"),  # requirers
        Check("boot.app", P, "ok", "shim", golden="k@a, k@b"),  # both versions ship this shim
        Check("boot.app", P, "ok", "kernel", golden="k@b"),
        Check("kernel.cmdline", P, "ok", "", golden="p@1"),
        Check("boot.app", F, "boot_app_not_approved", "", golden="k@a"),  # matched nothing
    ]
    assert booted_versions(checks) == ("k@b", "p@1")
    revoked = [Check("boot.app", F, "golden_revoked", "kernel", golden="k@a")]
    assert booted_versions(revoked) == ("k@a",)


def test_an_admin_actions_answer_shows_the_nodes_outdated_versions(fleet: Fleet) -> None:
    one, two = _nodes(fleet)
    fleet.attest(one), fleet.attest(two)
    for action in ("quarantine", "release"):
        resp = fleet.client.post(
            f"/v1/nodes/node-1/{action}", json={"reason": "maintenance"}, headers=fleet.h()
        )
        assert resp.status_code == 200, resp.json
        assert [(o["version"], o["why"]) for o in resp.json["outdated"]] == [
            ("kernel@a", "superseded")
        ]
