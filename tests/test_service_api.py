"""The verifier API through Flask's test client, on SQLite and a real PostgreSQL.

No TPM here: who may call what, malformed input, nonce refusals, tokens, golden lifecycle, admin
actions and the audit log, staleness. Quote-carrying flows are in test_service_swtpm.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.yamlfmt import dump_yaml
from tests.conftest import CORPUS
from tests.postgres import postgres_server, postgres_url  # noqa: F401
from verifier.service import ServiceConfig, create_app
from verifier.store import Store, repo, upgrade
from verifier.store.models import (
    Attestation,
    Enrollment,
    EventLogBlob,
    Node,
    Nonce,
)

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
SB_LOG = CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin"
ROLES = ("admin", "reviewer", "scheduler", "enroll")


@dataclass
class Env:
    client: FlaskClient
    store: Store
    tokens: dict[str, str]
    clock: list[dt.datetime] = field(default_factory=lambda: [T0])

    def h(self, role: str | None) -> dict[str, str]:
        return {} if role is None else {"Authorization": f"Bearer {self.tokens[role]}"}

    def counts(self) -> dict[str, int]:
        with self.store.read() as db:
            return {
                m.__tablename__: int(db.scalar(select(func.count()).select_from(m)) or 0)
                for m in (Node, Enrollment, Nonce, Attestation, EventLogBlob)
            }


def add_node(
    store: Store,
    name: str,
    *,
    state: str = "enrolled",
    labels: dict[str, str] | None = None,
    success: dt.datetime | None = None,
) -> int:
    with store.write() as db:
        node = Node(
            name=name,
            ek_public=b"ek-" + name.encode(),
            ek_fingerprint=hashlib.sha256(name.encode()).hexdigest(),
            ak_public=b"\x00\x01",
            ak_name=b"\x00\x0b" + bytes(32),
            labels=labels or {"pool": "a"},
            state=state,
            state_since=T0,
            reason="test",
            enrolled_at=T0,
            golden_versions=[],
            last_success_at=success,
        )
        db.add(node)
        db.flush()
        return node.id


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    url = (
        str(tmp_path / "v.db")
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    e = make_env(url)
    try:
        yield e
    finally:
        e.store.close()


def make_env(url: str, **config: Any) -> Env:
    """A migrated store at ``url`` with one token per role, node ``n1``, a settable clock at T0,
    and the app (attest interval 60 s, nonce lifetime 30 s unless ``config`` says otherwise)."""
    store = Store(url)
    upgrade(store)
    tokens = {}
    with store.write() as db:
        for role in ROLES:
            tokens[role], _ = repo.create_token(db, role, expires_at=None, now=T0)
    clock = [T0]
    cfg = ServiceConfig(database=url, **{"attest_interval": 60, "nonce_lifetime": 30, **config})
    app = create_app(cfg, store=store, clock=lambda: clock[0])
    add_node(store, "n1")
    return Env(app.test_client(), store, tokens, clock)


# --- who may call what ----------------------------------------------------------------------

ANY_TOKEN = None  # endpoints the agent calls without a token
ENDPOINTS: list[tuple[str, str, tuple[str, ...] | None]] = [
    ("POST", "/v1/enrollments", ("admin", "enroll")),
    ("POST", "/v1/enrollments/xyz/activation", ANY_TOKEN),
    ("POST", "/v1/nodes/n1/challenge", ANY_TOKEN),
    ("POST", "/v1/nodes/n1/evidence", ANY_TOKEN),
    ("GET", "/v1/nodes", ("admin", "reviewer", "scheduler")),
    ("GET", "/v1/nodes/n1", ("admin", "reviewer", "scheduler")),
    ("GET", "/v1/nodes/n1/attestations", ("admin", "reviewer")),
    ("GET", "/v1/attestations/1", ("admin", "reviewer")),
    ("GET", "/v1/attestations/1/evidence", ("admin", "reviewer")),
    ("GET", "/v1/golden", ("admin", "reviewer")),
    ("GET", "/v1/golden/g/1", ("admin", "reviewer")),
    ("POST", "/v1/golden", ("admin",)),
    ("POST", "/v1/golden/assignments", ("admin",)),
    ("POST", "/v1/golden/g/1/retire", ("admin",)),
    ("POST", "/v1/golden/g/1/revoke", ("admin",)),
    ("GET", "/v1/runtime-policies", ("admin", "reviewer")),
    ("GET", "/v1/runtime-policies/r/1", ("admin", "reviewer")),
    ("POST", "/v1/runtime-policies", ("admin",)),
    ("POST", "/v1/runtime-policies/assignments", ("admin",)),
    ("POST", "/v1/runtime-policies/r/1/activate", ("admin",)),
    ("POST", "/v1/runtime-policies/r/1/retire", ("admin",)),
    ("POST", "/v1/runtime-policies/r/1/revoke", ("admin",)),
    ("POST", "/v1/nodes/n1/quarantine", ("admin",)),
    ("POST", "/v1/nodes/n1/release", ("admin",)),
    ("POST", "/v1/nodes/n1/replace", ("admin",)),
    ("POST", "/v1/nodes/n1/reappraise", ("admin",)),
    ("POST", "/v1/nodes/n1/move", ("admin",)),
    ("POST", "/v1/nodes/n1/labels", ("admin",)),
    ("DELETE", "/v1/nodes/n1", ("admin",)),
    ("POST", "/v1/admin/reappraise", ("admin",)),
    ("POST", "/v1/admin/sweep", ("admin",)),
    ("POST", "/v1/tokens", ("admin",)),
    ("GET", "/v1/tokens", ("admin",)),
    ("POST", "/v1/tokens/abc/revoke", ("admin",)),
    ("GET", "/v1/audit", ("admin", "reviewer")),
    ("GET", "/v1/rollouts/fleet", ("admin", "reviewer")),
    ("PUT", "/v1/golden/fleet/1/canary", ("admin",)),
    ("DELETE", "/v1/golden/fleet/1/canary", ("admin",)),
    ("GET", "/v1/openapi.json", ANY_TOKEN),
    ("GET", "/v1/incidents", ("admin", "reviewer")),
    ("GET", "/v1/incidents/1", ("admin", "reviewer")),
    ("POST", "/v1/incidents/1/triage", ("admin", "reviewer")),
    ("POST", "/v1/incidents/1/notes", ("admin", "reviewer")),
    ("GET", "/v1/attestations/1/promotable", ("admin", "reviewer")),
    ("POST", "/v1/drafts", ("admin",)),
    ("GET", "/v1/drafts", ("admin", "reviewer")),
    ("GET", "/v1/drafts/1", ("admin", "reviewer")),
    ("POST", "/v1/drafts/1/approve", ("admin", "reviewer")),
    ("POST", "/v1/drafts/1/reject", ("admin", "reviewer")),
    ("GET", "/v1/nodes/n1/ear", ("admin", "reviewer", "scheduler")),
    ("GET", "/v1/keys", ANY_TOKEN),
    ("GET", "/v1/events", ("admin", "reviewer", "scheduler")),
]


@pytest.mark.parametrize(
    ("method", "path", "allowed"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS]
)
def test_each_endpoint_admits_exactly_its_roles(
    env: Env, method: str, path: str, allowed: tuple[str, ...] | None
) -> None:
    for role in (None, *ROLES):
        resp = env.client.open(path, method=method, headers=env.h(role), json={"reason": "t"})
        if allowed is None:
            assert resp.status_code not in (401, 403), (role, resp.json)
        elif role is None:
            assert resp.status_code == 401 and resp.json["error"]["code"] == "unauthenticated"
        elif role in allowed:
            assert resp.status_code not in (401, 403), (role, resp.json)
        else:
            assert resp.status_code == 403, (role, resp.status_code)
            assert resp.json["error"]["code"] == "forbidden"


def test_every_route_is_in_the_authorization_table(env: Env) -> None:
    app = env.client.application
    routes = {
        (r.endpoint, m)
        for r in app.url_map.iter_rules()
        for m in r.methods or ()
        if m in ("GET", "POST", "PUT", "DELETE") and r.rule.startswith("/v1")
    }
    adapter = app.url_map.bind("localhost")
    covered = {(adapter.match(path, method)[0], method) for method, path, _ in ENDPOINTS}
    assert covered == routes


@pytest.mark.parametrize("header", ["Bearer nope", "Basic abc", "Bearer", "token"])
def test_bad_tokens_are_refused(env: Env, header: str) -> None:
    resp = env.client.get("/v1/nodes", headers={"Authorization": header})
    assert resp.status_code == 401
    assert resp.json["error"]["code"] in ("invalid_token", "unauthenticated")


def test_expired_token_is_refused(env: Env) -> None:
    with env.store.write() as db:
        secret, _ = repo.create_token(
            db, "scheduler", expires_at=T0 + dt.timedelta(seconds=10), now=T0
        )
    assert (
        env.client.get("/v1/nodes", headers={"Authorization": f"Bearer {secret}"}).status_code
        == 200
    )
    env.clock[0] = T0 + dt.timedelta(seconds=11)
    resp = env.client.get("/v1/nodes", headers={"Authorization": f"Bearer {secret}"})
    assert resp.status_code == 401 and resp.json["error"]["code"] == "token_expired"


def test_admin_creates_tokens_that_work_and_are_audited(env: Env) -> None:
    resp = env.client.post(
        "/v1/tokens", headers=env.h("admin"), json={"role": "scheduler", "ttl": 60}
    )
    assert resp.status_code == 201
    token = resp.json["token"]
    assert (
        env.client.get("/v1/nodes", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )
    audit = env.client.get("/v1/audit", headers=env.h("reviewer")).json["audit"]
    assert audit[0]["action"] == "token_create" and audit[0]["details"] == {"role": "scheduler"}


# --- malformed input: a 4xx with a stable code, nothing stored --------------------------------

GOOD_B64 = base64.b64encode(b"\x00\x10" + bytes(16)).decode()
ENROLL_BAD: list[tuple[str, Any, int, str]] = [
    ("not json", b"{nope", 400, "malformed_json"),
    ("array", [1, 2], 400, "malformed_json"),
    ("empty", b"", 400, "malformed_json"),
    ("no node", {"ek_public": GOOD_B64, "ak_public": GOOD_B64}, 400, "bad_field"),
    ("node not text", {"node": 5, "ek_public": GOOD_B64, "ak_public": GOOD_B64}, 400, "bad_field"),
    (
        "slash in node",
        {"node": "a/b", "ek_public": GOOD_B64, "ak_public": GOOD_B64},
        400,
        "bad_field",
    ),
    ("bad base64", {"node": "x", "ek_public": "!!!", "ak_public": GOOD_B64}, 400, "bad_base64"),
    ("b64 not text", {"node": "x", "ek_public": 12, "ak_public": GOOD_B64}, 400, "bad_field"),
    (
        "labels not map",
        {"node": "x", "labels": [1], "ek_public": GOOD_B64, "ak_public": GOOD_B64},
        400,
        "bad_field",
    ),
    (
        "garbage EK",
        {"node": "x", "ek_public": GOOD_B64, "ak_public": GOOD_B64},
        400,
        "malformed_evidence",
    ),
    ("huge key", {"node": "x", "ek_public": "A" * 8000, "ak_public": GOOD_B64}, 400, "bad_field"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "code"), ENROLL_BAD, ids=[c[0] for c in ENROLL_BAD]
)
def test_malformed_enrollment_is_a_4xx_and_stores_nothing(
    env: Env, case: str, body: Any, status: int, code: str
) -> None:
    before = env.counts()
    if isinstance(body, bytes):
        resp = env.client.post(
            "/v1/enrollments",
            data=body,
            headers={**env.h("enroll"), "Content-Type": "application/json"},
        )
    else:
        resp = env.client.post("/v1/enrollments", json=body, headers=env.h("enroll"))
    assert (resp.status_code, resp.json["error"]["code"]) == (status, code), resp.json
    assert env.counts() == before


def _bundle(**over: Any) -> bytes:
    return cbor2.dumps({k: v for k, v in bundle_doc(**over).items() if v is not None})


def bundle_doc(**over: Any) -> dict[str, Any]:
    """A well-formed evidence bundle (as a dict) for node ``n1`` with a garbage quote."""
    doc: dict[str, Any] = {
        "v": 1,
        "node": "n1",
        "agent_version": "t",
        "nonce": bytes(32),
        "attest": b"\xff\x54",
        "signature": b"\x00\x18",
        "pcrs": {"sha256": {0: bytes(32)}},
        "event_log_sha256": hashlib.sha256(b"log").digest(),
        "event_log": b"log",
    }
    doc.update(over)
    return doc


EVIDENCE_BAD: list[tuple[str, bytes, int, str]] = [
    ("not cbor", b"\xff\xff\xff", 400, "malformed_evidence"),
    ("truncated cbor", _bundle()[:-5], 400, "malformed_evidence"),
    ("cbor list", cbor2.dumps([1, 2]), 400, "malformed_evidence"),
    ("empty", b"", 400, "malformed_evidence"),
    ("version 2", _bundle(v=2), 400, "malformed_evidence"),
    ("nonce text", _bundle(nonce="00"), 400, "malformed_evidence"),
    ("no attest", _bundle(attest=None), 400, "malformed_evidence"),
    ("pcrs not map", _bundle(pcrs=[1]), 400, "malformed_evidence"),
    ("unknown bank", _bundle(pcrs={"md5": {0: bytes(16)}}), 400, "malformed_evidence"),
    ("pcr index text", _bundle(pcrs={"sha256": {"0": bytes(32)}}), 400, "malformed_evidence"),
    ("pcr 24", _bundle(pcrs={"sha256": {24: bytes(32)}}), 400, "malformed_evidence"),
    ("short digest", _bundle(pcrs={"sha256": {0: bytes(20)}}), 400, "malformed_evidence"),
    ("log digest wrong", _bundle(event_log=b"other"), 400, "malformed_evidence"),
    (
        "log digest short",
        _bundle(event_log_sha256=bytes(8), event_log=None),
        400,
        "malformed_evidence",
    ),
    ("other node", _bundle(node="n2"), 400, "node_mismatch"),
    ("deep nesting", b"\x81" * 100000 + b"\x00", 400, "malformed_evidence"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "code"), EVIDENCE_BAD, ids=[c[0] for c in EVIDENCE_BAD]
)
def test_malformed_evidence_is_a_4xx_and_stores_nothing(
    env: Env, case: str, body: bytes, status: int, code: str
) -> None:
    before = env.counts()
    resp = env.client.post(
        "/v1/nodes/n1/evidence", data=body, headers={"Content-Type": "application/cbor"}
    )
    assert (resp.status_code, resp.json["error"]["code"]) == (status, code), resp.json
    assert env.counts() == before


def test_evidence_needs_the_cbor_content_type(env: Env) -> None:
    resp = env.client.post(
        "/v1/nodes/n1/evidence", data=_bundle(), headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 415 and resp.json["error"]["code"] == "unsupported_media_type"


def test_oversized_evidence_is_refused_before_decoding(env: Env) -> None:
    app = env.client.application
    limit = app.extensions["assay"].config.max_bundle
    resp = env.client.post(
        "/v1/nodes/n1/evidence",
        data=b"\x00" * (limit + 2048),
        headers={"Content-Type": "application/cbor"},
    )
    assert resp.status_code == 413
    assert "error" in resp.json


def test_activation_with_bad_base64_or_unknown_id(env: Env) -> None:
    resp = env.client.post("/v1/enrollments/abc/activation", json={"secret": "%%%"})
    assert (resp.status_code, resp.json["error"]["code"]) == (400, "bad_base64")
    resp = env.client.post("/v1/enrollments/abc/activation", json={"secret": GOOD_B64})
    assert (resp.status_code, resp.json["error"]["code"]) == (404, "enrollment_unknown")


def test_unknown_route_and_method_are_json_errors(env: Env) -> None:
    resp = env.client.get("/v1/nope")
    assert resp.status_code == 404 and resp.json["error"]["code"] == "not_found"
    resp = env.client.put("/v1/nodes/n1/challenge")
    assert resp.status_code == 405 and "error" in resp.json


# --- nonces ---------------------------------------------------------------------------------


def _challenge(env: Env, node: str = "n1") -> bytes:
    resp = env.client.post(f"/v1/nodes/{node}/challenge")
    assert resp.status_code == 201, resp.json
    assert resp.json["pcr_selection"] == {"sha256": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14]}
    nonce = bytes.fromhex(resp.json["nonce"])
    assert len(nonce) == 32
    return nonce


def _submit(env: Env, nonce: bytes, node: str = "n1") -> Any:
    return env.client.post(
        f"/v1/nodes/{node}/evidence",
        data=_bundle(nonce=nonce, node=node),
        headers={"Content-Type": "application/cbor"},
    )


def test_challenge_for_unknown_node_says_enroll_again(env: Env) -> None:
    # The unauthenticated challenge no longer reveals whether a node exists (issue 10 §5):
    # the "enroll again" answer comes at the evidence step.
    nonce = _challenge(env, "ghost")
    resp = _submit(env, nonce, "ghost")
    assert resp.status_code == 404 and resp.json["error"]["code"] == "node_not_enrolled"


def test_nonce_never_issued_is_refused(env: Env) -> None:
    _challenge(env)
    resp = _submit(env, b"\x42" * 32)
    assert (resp.status_code, resp.json["error"]["code"]) == (422, "nonce_unknown")


def test_nonce_is_single_use_even_when_the_quote_fails(env: Env) -> None:
    nonce = _challenge(env)
    first = _submit(env, nonce)
    assert first.status_code == 400 and first.json["error"]["code"] == "malformed_evidence"
    second = _submit(env, nonce)
    assert (second.status_code, second.json["error"]["code"]) == (422, "nonce_reused")


def test_expired_nonce_is_refused(env: Env) -> None:
    nonce = _challenge(env)
    env.clock[0] = T0 + dt.timedelta(seconds=31)
    resp = _submit(env, nonce)
    assert (resp.status_code, resp.json["error"]["code"]) == (422, "nonce_expired")


def test_another_nodes_nonce_is_refused(env: Env) -> None:
    add_node(env.store, "n2")
    nonce = _challenge(env, "n2")
    resp = _submit(env, nonce, "n1")
    assert (resp.status_code, resp.json["error"]["code"]) == (422, "nonce_wrong_node")


# --- inventory, staleness, admin ------------------------------------------------------------


def test_node_list_filters_by_state_and_label_and_computes_stale(env: Env) -> None:
    add_node(env.store, "fresh", state="trusted", labels={"pool": "gpu"}, success=T0)
    add_node(
        env.store,
        "old",
        state="trusted",
        labels={"pool": "gpu"},
        success=T0 - dt.timedelta(seconds=181),
    )
    add_node(env.store, "bad", state="untrusted", labels={"pool": "cpu"})

    def get(q: str) -> list[str]:
        return sorted(
            n["name"]
            for n in env.client.get(f"/v1/nodes{q}", headers=env.h("scheduler")).json["nodes"]
        )

    assert get("?state=trusted") == ["fresh"]
    assert get("?state=stale") == ["old"]
    assert get("?label=pool=gpu") == ["fresh", "old"]
    assert get("?state=untrusted&label=pool=cpu") == ["bad"]
    assert get("?state=trusted&label=pool=cpu") == []
    one = env.client.get("/v1/nodes/old", headers=env.h("scheduler")).json
    assert one["state"] == "stale" and "no successful attestation since" in one["reason"]
    # 3 x 60 s later the fresh one is stale too, and the sweep persists it.
    env.clock[0] = T0 + dt.timedelta(seconds=181)
    assert get("?state=trusted") == []
    swept = env.client.post("/v1/admin/sweep", headers=env.h("admin"), json={}).json["stale"]
    assert sorted(swept) == ["fresh", "old"]
    with env.store.read() as db:
        assert {n.name: n.state for n in repo.list_nodes(db, states=["stale"])} == {
            "fresh": "stale",
            "old": "stale",
        }


def test_bad_state_or_label_filter_is_a_400(env: Env) -> None:
    for q in ("?state=happy", "?label=novalue"):
        resp = env.client.get(f"/v1/nodes{q}", headers=env.h("admin"))
        assert resp.status_code == 400 and resp.json["error"]["code"] == "bad_query"


def test_quarantine_release_delete_are_audited_with_reason(env: Env) -> None:
    resp = env.client.post(
        "/v1/nodes/n1/quarantine", headers=env.h("admin"), json={"reason": "incident 7"}
    )
    assert resp.status_code == 200 and resp.json["state"] == "quarantined"
    again = env.client.post("/v1/nodes/n1/quarantine", headers=env.h("admin"), json={"reason": "x"})
    assert again.status_code == 409
    assert (
        env.client.post("/v1/nodes/n1/release", headers=env.h("admin"), json={}).status_code == 400
    )
    resp = env.client.post(
        "/v1/nodes/n1/release", headers=env.h("admin"), json={"reason": "cleared"}
    )
    assert resp.json["state"] == "enrolled"
    resp = env.client.delete(
        "/v1/nodes/n1", headers=env.h("admin"), json={"reason": "decommissioned"}
    )
    assert resp.status_code == 200
    assert env.client.get("/v1/nodes/n1", headers=env.h("admin")).status_code == 404
    audit = env.client.get("/v1/audit?target=n1", headers=env.h("reviewer")).json["audit"]
    assert [(a["action"], a["reason"]) for a in reversed(audit)] == [
        ("quarantine", "incident 7"),
        ("release", "cleared"),
        ("delete", "decommissioned"),
    ]
    assert all(a["actor"].endswith("(admin)") for a in audit)


# --- golden lifecycle -----------------------------------------------------------------------


def golden_yaml(name: str, version: str, path: Path = SB_LOG) -> str:
    log = parse_event_log(path.read_bytes())
    gs = capture(assume_quoted_for_review(log, HashAlg.SHA256), name=name, version=version)
    return dump_yaml(gs)


def test_golden_upload_list_assign_retire(env: Env) -> None:
    text = golden_yaml("fleet", "1")
    resp = env.client.post(
        "/v1/golden", data=text, headers={**env.h("admin"), "Content-Type": "application/yaml"}
    )
    assert resp.status_code == 201, resp.json
    assert resp.json["id"] == "fleet@1" and resp.json["status"] == "active"
    dup = env.client.post(
        "/v1/golden", data=text, headers={**env.h("admin"), "Content-Type": "application/yaml"}
    )
    assert dup.status_code == 409 and dup.json["error"]["code"] == "golden_exists"
    resp = env.client.post(
        "/v1/golden/assignments",
        headers=env.h("admin"),
        json={"golden": "fleet", "selector": {"pool": "a"}},
    )
    assert resp.json["added"] is True
    listing = env.client.get("/v1/golden", headers=env.h("reviewer")).json
    assert [g["id"] for g in listing["golden"]] == ["fleet@1"]
    assert listing["assignments"] == [{"golden": "fleet", "selector": {"pool": "a"}}]
    shown = env.client.get("/v1/golden/fleet/1", headers=env.h("reviewer")).json
    assert shown["source"] == text
    resp = env.client.post(
        "/v1/golden/fleet/1/retire", headers=env.h("admin"), json={"reason": "kernel 6.2 rolled"}
    )
    assert resp.json["status"] == "retired" and resp.json["reason"] == "kernel 6.2 rolled"
    assert resp.json["reappraised"] == []  # n1 matches but has no evidence yet


def test_malformed_golden_upload_is_a_400_naming_the_line(env: Env) -> None:
    resp = env.client.post(
        "/v1/golden",
        data="name: x\nversion: [\n",
        headers={**env.h("admin"), "Content-Type": "application/yaml"},
    )
    assert resp.status_code == 400 and resp.json["error"]["code"] == "malformed_evidence"
    assert ":3:" in resp.json["error"]["message"] or ":2:" in resp.json["error"]["message"]
    with env.store.read() as db:
        assert repo.list_golden(db) == []
