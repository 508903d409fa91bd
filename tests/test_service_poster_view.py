"""The (unauthenticated) evidence poster learns status, reason codes and check ids only.

The approved values (``expected`` digests and command lines, golden messages) are for reviewers
and admins (``GET /v1/attestations/{id}``). Before, the evidence response carried every check in
full, so anyone holding a node's AK — or a compromised node — could read the golden set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from testkit.service import FakeAgentForLoad
from tests.test_service_api import SB_LOG, T0, golden_yaml
from verifier.service import ServiceConfig, create_app
from verifier.store import Store, repo, upgrade

OTHER_LOG = SB_LOG.parent / "uki-systemd-stub.bin"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[FlaskClient, Store, str]]:
    url = str(tmp_path / "v.db")
    store = Store(url)
    upgrade(store)
    with store.write() as db:
        reviewer, _ = repo.create_token(db, "reviewer", expires_at=None, now=T0)
        admin, _ = repo.create_token(db, "admin", expires_at=None, now=T0)
    client = create_app(ServiceConfig(database=url), store=store).test_client()
    h = {"Authorization": f"Bearer {admin}", "Content-Type": "application/yaml"}
    assert client.post("/v1/golden", data=golden_yaml("fleet", "1"), headers=h).status_code == 201
    resp = client.post(
        "/v1/golden/assignments",
        json={"golden": "fleet", "selector": {}},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert resp.status_code == 200
    try:
        yield client, store, reviewer
    finally:
        store.close()


def _attest(client: FlaskClient, agent: FakeAgentForLoad) -> dict[str, object]:
    ch = client.post(f"/v1/nodes/{agent.name}/challenge")
    assert ch.status_code == 201, ch.json
    resp = client.post(
        f"/v1/nodes/{agent.name}/evidence",
        data=agent.evidence(bytes.fromhex(ch.json["nonce"])),
        headers={"Content-Type": "application/cbor"},
    )
    assert resp.status_code == 200, resp.json
    out: dict[str, object] = resp.json
    return out


def test_an_untrusted_verdict_shows_the_poster_codes_but_no_approved_values(
    app: tuple[FlaskClient, Store, str],
) -> None:
    client, store, reviewer = app
    agent = FakeAgentForLoad("other-1", OTHER_LOG.read_bytes())
    agent.enroll_directly(store)
    out = _attest(client, agent)
    assert out["status"] == "untrusted"
    checks = out["checks"]
    assert isinstance(checks, list) and checks
    assert all(set(c) == {"id", "status", "reason"} for c in checks)
    assert ":" not in str(out["reason"])  # the reason code, not the message
    full = client.get(
        f"/v1/attestations/{out['attestation_id']}",
        headers={"Authorization": f"Bearer {reviewer}"},
    ).json
    checks_full = full["verdict"]["checks"]
    expected = [str(c["expected"]) for c in checks_full if len(str(c.get("expected") or "")) >= 8]
    assert expected, "the reviewer's verdict carries the approved values"
    text = json.dumps(out)
    leaked = [e for e in expected if str(e) in text]
    assert not leaked, (leaked, text[:500])
    failing = [c for c in full["verdict"]["checks"] if c["status"] != "pass"]
    assert out["reason"] == failing[0]["reason"]
    assert [c["id"] for c in checks] == [c["id"] for c in full["verdict"]["checks"]]


def test_a_trusted_verdict_still_says_so_to_the_poster(
    app: tuple[FlaskClient, Store, str],
) -> None:
    client, store, _ = app
    agent = FakeAgentForLoad("good-1", SB_LOG.read_bytes())
    agent.enroll_directly(store)
    out = _attest(client, agent)
    assert out["status"] == "trusted" and str(out["reason"]).startswith("all ")
    assert all(set(c) == {"id", "status", "reason"} for c in out["checks"])  # type: ignore[attr-defined]
