"""The unauthenticated challenge: nobody can evict a node's nonce, learn whether a node exists or
which boot log it holds, grow the database, or flood the endpoint from one address.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.test_service_api import T0, Env, _bundle, make_env
from verifier.service import ServiceConfig, create_app
from verifier.store import repo
from verifier.store.models import AuditEntry, Node, Nonce

CBOR = {"Content-Type": "application/cbor"}


def _env(tmp_path: Path, **config: float) -> Env:
    return make_env(str(tmp_path / "v.db"), **config)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = _env(tmp_path)
    try:
        yield e
    finally:
        e.store.close()


def _rows(env: Env, model: type) -> int:
    with env.store.read() as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def test_a_flood_of_challenges_never_evicts_the_agents_nonce(env: Env) -> None:
    mine = bytes.fromhex(env.client.post("/v1/nodes/n1/challenge").json["nonce"])
    answers = [env.client.post("/v1/nodes/n1/challenge") for _ in range(40)]
    # Stateless nonces: nothing is stored for a challenge, so a flood uses nothing up (issue 10
    # §5: with 16 stored slots per node, 16 challenges from anywhere locked the agent out).
    assert [r.status_code for r in answers] == [201] * 40
    assert _rows(env, Nonce) == 0
    # The agent's nonce is still good: the (garbage) quote is what fails, not the nonce.
    resp = env.client.post("/v1/nodes/n1/evidence", data=_bundle(nonce=mine), headers=CBOR)
    assert (resp.status_code, resp.json["error"]["code"]) == (400, "malformed_evidence")
    with env.store.write() as db:
        node = repo.get_node(db, "n1")
        assert isinstance(node, Node)
        assert repo.consume_nonce(db, node.id, mine, T0) == "nonce_reused"  # the post used it


def test_a_challenge_does_not_reveal_whether_the_node_exists(env: Env) -> None:
    known = env.client.post("/v1/nodes/n1/challenge")
    ghost = env.client.post("/v1/nodes/ghost/challenge")
    assert known.status_code == ghost.status_code == 201
    assert set(known.json) == set(ghost.json)
    assert known.json["pcr_selection"] == ghost.json["pcr_selection"]
    assert len(ghost.json["nonce"]) == len(known.json["nonce"]) == 64
    assert _rows(env, Nonce) == 0  # nothing is stored for a challenge, enrolled or not


def test_the_boot_log_digest_is_only_echoed_to_a_caller_who_names_it(env: Env) -> None:
    log = b"boot log"
    digest = hashlib.sha256(log).hexdigest()
    with env.store.write() as db:
        repo.put_event_log(db, digest, log, T0)
        node = repo.get_node(db, "n1")
        assert isinstance(node, Node)
        node.boot_log_sha256 = digest

    def known(body: object) -> object:
        return env.client.post("/v1/nodes/n1/challenge", json=body).json["known_event_log_sha256"]

    assert known({}) is None
    assert known({"event_log_sha256": "00" * 32}) is None
    assert known({"event_log_sha256": digest}) == digest
    assert known({"event_log_sha256": digest.upper()}) == digest
    resp = env.client.post("/v1/nodes/n1/challenge", json={"event_log_sha256": "zz"})
    assert (resp.status_code, resp.json["error"]["code"]) == (400, "bad_field")


def test_bogus_evidence_posts_add_one_audit_row_not_one_each(env: Env) -> None:
    for _ in range(30):
        nonce = bytes.fromhex(env.client.post("/v1/nodes/n1/challenge").json["nonce"])
        resp = env.client.post("/v1/nodes/n1/evidence", data=_bundle(nonce=nonce), headers=CBOR)
        assert resp.status_code == 400
    with env.store.read() as db:
        rows = list(db.scalars(select(AuditEntry).where(AuditEntry.action == "evidence_refused")))
    assert len(rows) == 1 and rows[0].details["count"] == 30
    assert _rows(env, Nonce) <= 30  # one per used nonce, forgotten when it expires
    # A new window gets a new row: growth is bounded by time, not by requests.
    env.clock[0] = T0.replace(minute=T0.minute + 11)
    nonce = bytes.fromhex(env.client.post("/v1/nodes/n1/challenge").json["nonce"])
    env.client.post("/v1/nodes/n1/evidence", data=_bundle(nonce=nonce), headers=CBOR)
    assert _rows(env, AuditEntry) == 2


def test_the_coalesced_audit_entry_shows_its_last_time_in_the_apis_format(env: Env) -> None:
    for minute in (0, 1):
        env.clock[0] = T0.replace(minute=minute)
        nonce = bytes.fromhex(env.client.post("/v1/nodes/n1/challenge").json["nonce"])
        env.client.post("/v1/nodes/n1/evidence", data=_bundle(nonce=nonce), headers=CBOR)
    audit = env.client.get("/v1/audit?target=n1", headers=env.h("reviewer")).json["audit"]
    [entry] = [a for a in audit if a["action"] == "evidence_refused"]
    assert (entry["at"], entry["details"]["count"]) == ("2026-11-28T12:00:00Z", 2)
    assert entry["details"]["last_at"] == "2026-11-28T12:01:00Z"  # was "…12:01:00+00:00"


def test_one_address_is_rate_limited_on_unauthenticated_endpoints(tmp_path: Path) -> None:
    env = _env(tmp_path, client_rate=0.001, client_burst=5)
    try:
        codes = [env.client.post("/v1/nodes/ghost/challenge").status_code for _ in range(5)]
        assert codes == [201] * 5
        resp = env.client.post("/v1/nodes/n1/evidence", data=_bundle(), headers=CBOR)
        assert (resp.status_code, resp.json["error"]["code"]) == (429, "rate_limited")
        other = env.client.post("/v1/nodes/n1/challenge", environ_base={"REMOTE_ADDR": "127.0.0.2"})
        assert other.status_code == 201
        assert env.client.get("/v1/nodes", headers=env.h("admin")).status_code == 200
    finally:
        env.store.close()


def test_evidence_on_an_instance_that_never_issued_a_challenge(env: Env, tmp_path: Path) -> None:
    """Another instance (or gunicorn worker) on the same database takes the evidence: it reads the
    shared nonce key for the first time then, before its write transaction (a nested write on
    SQLite would wait for its own lock and answer 503)."""
    mine = bytes.fromhex(env.client.post("/v1/nodes/n1/challenge").json["nonce"])
    url = str(tmp_path / "v.db")
    other = create_app(
        ServiceConfig(database=url, nonce_lifetime=30), store=env.store, clock=lambda: env.clock[0]
    )
    resp = other.test_client().post("/v1/nodes/n1/evidence", data=_bundle(nonce=mine), headers=CBOR)
    # The nonce is accepted (it is the garbage quote that fails), and promptly: not a 503.
    assert (resp.status_code, resp.json["error"]["code"]) == (400, "malformed_evidence")
    with env.store.write() as db:
        node = repo.get_node(db, "n1")
        assert isinstance(node, Node)
        assert repo.consume_nonce(db, node.id, mine, T0) == "nonce_reused"
