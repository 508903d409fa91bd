"""New evidence's full record: on PostgreSQL one statement (``verifier.store.fullrecord``), on
SQLite ``record`` in a write transaction — the same rows either way, nothing written by a try
whose node changed under it, the verdict touched as the blob GC needs."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests.postgres import postgres_server, postgres_url  # noqa: F401
from tests.test_fleet_protocol import Fleet, _agent, _first, make_fleet
from verifier.appraisal import VerdictStatus
from verifier.service import attestation, events
from verifier.store import fullrecord, hotpath
from verifier.store.models import Attestation, EventLogBlob, Node, Nonce, VerdictBlob

HOSTILE = 'a"},"attestation_id":"1","x":"\\\u2028</script>\U0001f600\x00\ud800\x1b[2J'
"""Quotes that try to close the payload's JSON, a backslash, U+2028, an emoji, NUL, a lone
surrogate and an escape sequence."""


@pytest.fixture(params=["sqlite", "postgres"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    url = (
        str(tmp_path / "v.db")
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    f = make_fleet(url)
    try:
        yield f
    finally:
        f.store.close()


def _writes(monkeypatch: pytest.MonkeyPatch) -> list[fullrecord.Written]:
    """What each one-statement full record answered (PostgreSQL only)."""
    seen: list[fullrecord.Written] = []
    real = fullrecord.write

    def spy(raw: Any, rec: fullrecord.FullRecord) -> fullrecord.Written:
        seen.append(real(raw, rec))
        return seen[-1]

    monkeypatch.setattr(fullrecord, "write", spy)
    return seen


def _feed(f: Fleet) -> list[dict[str, Any]]:
    page = events.feed(
        f.store, 0, wait=0, limit=100, monotonic=time.monotonic, sleep=time.sleep,
        now=lambda: f.clock[0] + dt.timedelta(minutes=1),
    )  # fmt: skip
    return [e for e in page.events if e["type"] == events.NODE_STATE_CHANGED]


def test_a_first_attestation_writes_its_rows_once_in_one_statement(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = _writes(monkeypatch)
    agent = _agent(fleet)
    nonce = fleet.challenge(agent)
    resp = fleet.post(agent, nonce, send_log=True)
    assert resp.status_code == 200, resp.json
    assert (resp.json["status"], resp.json["node_state"]) == ("trusted", "trusted")
    att_id = int(resp.json["attestation_id"])
    if fleet.store.is_sqlite:
        assert writes == []
    else:
        assert [w.attestation_id for w in writes] == [att_id]
    with fleet.store.read() as db:
        row = db.get(Attestation, att_id)
        node = db.scalars(select(Node).where(Node.name == agent.name)).one()
        assert (
            row is not None
            and row.nonce == nonce
            and row.event_log_sha256 == agent.log_sha256.hex()
        )
        assert (node.last_attestation_id, node.state, node.boot_log_sha256) == (
            att_id,
            "trusted",
            agent.log_sha256.hex(),
        )
        assert node.last_clock is not None and node.verdict_key
        assert db.scalar(select(func.count()).where(Nonce.nonce == nonce)) == 1
        assert db.scalar(select(func.count()).select_from(EventLogBlob)) == 1
        assert hotpath.verdict_of(db, row)["status"] == "trusted"
    feed = _feed(fleet)
    assert [(e["node"], e["old_state"], e["new_state"], e["attestation_id"]) for e in feed] == [
        (agent.name, "enrolled", "trusted", str(att_id))
    ]
    # The same log again from another node: stored once; an identical verdict referred to.
    other = _agent(fleet, "n2")
    assert fleet.post(other, fleet.challenge(other), send_log=True).status_code == 200
    assert fleet.count(EventLogBlob) == 1 and fleet.count(VerdictBlob) == 1
    assert fleet.count(Attestation) == 2


def test_a_node_changed_before_the_full_record_gets_nothing_written_and_one_record(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another instance changed the node after this one read it: the try writes nothing at all
    (no attestation, no nonce, no feed event), and a fresh read records it exactly once."""
    writes = _writes(monkeypatch)
    agent = _agent(fleet)
    real = attestation._log_bytes
    changes = [0]

    def log_bytes_after_a_change(svc: Any, log_hex: str, sent: bytes | None) -> Any:
        if changes[0] == 0:
            changes[0] += 1
            with fleet.store.write() as db:  # an admin set a label meanwhile
                db.execute(update(Node).where(Node.name == agent.name).values(labels={"a": "b"}))
        return real(svc, log_hex, sent)

    monkeypatch.setattr(attestation, "_log_bytes", log_bytes_after_a_change)
    nonce = fleet.challenge(agent)
    resp = fleet.post(agent, nonce, send_log=True)
    assert resp.status_code == 200, resp.json
    if not fleet.store.is_sqlite:
        assert [w.attestation_id is None for w in writes] == [True, False]
        assert writes[0].nonce_fresh and writes[1].nonce_fresh
    assert fleet.count(Attestation) == 1
    with fleet.store.read() as db:
        assert db.scalar(select(func.count()).where(Nonce.nonce == nonce)) == 1
        node = db.scalars(select(Node).where(Node.name == agent.name)).one()
        assert node.labels == {"a": "b"} and node.state == "trusted"
    assert [e["attestation_id"] for e in _feed(fleet)] == [resp.json["attestation_id"]]


def test_a_nonce_used_meanwhile_by_another_instance_fails_the_whole_record(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = _writes(monkeypatch)
    agent = _agent(fleet)
    nonce = fleet.challenge(agent)
    real = attestation._log_bytes

    def log_bytes_after_a_replay(svc: Any, log_hex: str, sent: bytes | None) -> Any:
        with fleet.store.write() as db:  # the same evidence, recorded by another instance
            node_id = db.scalars(select(Node.id).where(Node.name == agent.name)).one()
            hotpath.use_nonce(db, node_id, nonce, fleet.clock[0], fleet.clock[0])
        return real(svc, log_hex, sent)

    monkeypatch.setattr(attestation, "_log_bytes", log_bytes_after_a_replay)
    resp = fleet.post(agent, nonce, send_log=True)
    assert (resp.status_code, resp.json["error"]["code"]) == (422, "nonce_reused")
    if not fleet.store.is_sqlite:
        assert [(w.attestation_id, w.nonce_fresh) for w in writes] == [(None, False)]
    assert fleet.count(Attestation) == 0 and fleet.count(EventLogBlob) == 0
    assert fleet.count(VerdictBlob) == 0 and _feed(fleet) == []
    with fleet.store.read() as db:
        node = db.scalars(select(Node).where(Node.name == agent.name)).one()
        assert (node.state, node.last_attestation_id) == ("enrolled", None)


def test_a_verdict_older_than_touch_after_is_touched_and_a_fresh_one_is_not_sent_again(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[bool] = []
    real = fullrecord.write

    def spy(raw: Any, rec: fullrecord.FullRecord) -> fullrecord.Written:
        sent.append(rec.verdict is not None)
        return real(raw, rec)

    monkeypatch.setattr(fullrecord, "write", spy)

    def created() -> dt.datetime:
        with fleet.store.read() as db:
            return db.scalars(select(VerdictBlob.created_at)).one()

    t0 = fleet.clock[0]
    _first(fleet, _agent(fleet, "n1"))
    assert created() == t0
    fleet.clock[0] = t0 + dt.timedelta(minutes=5)  # within TOUCH_AFTER: left as it is
    _first(fleet, _agent(fleet, "n2"))
    assert created() == t0
    fleet.clock[0] = t0 + hotpath.TOUCH_AFTER + dt.timedelta(seconds=1)  # older: touched
    _first(fleet, _agent(fleet, "n3"))
    assert created() == fleet.clock[0]
    if not fleet.store.is_sqlite:  # this process knew it fresh for n2 only
        assert sent == [True, False, True]
    # Another instance (no cache) with a verdict row made old behind this one's back.
    with fleet.store.write() as db:
        db.execute(update(VerdictBlob).values(created_at=t0 - dt.timedelta(days=1)))
    fleet.svc.stored_verdicts.discard(next(iter(_digests(fleet))))
    _first(fleet, _agent(fleet, "n4"))
    assert created() == fleet.clock[0]
    assert fleet.count(VerdictBlob) == 1


def _digests(f: Fleet) -> list[str]:
    with f.store.read() as db:
        return list(db.scalars(select(VerdictBlob.sha256)))


def test_hostile_strings_in_the_reason_survive_the_feed_payload_unchanged(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feed's payload is JSON text the statement completes: whatever a reason holds, it is
    escaped, and it cannot add or replace a key (the attestation id is the record's own)."""
    from verifier.service.golden_policy import failed

    def hostile(*args: Any) -> Any:
        return failed(VerdictStatus.UNTRUSTED, "event_log_malformed", HOSTILE)

    monkeypatch.setattr(attestation, "appraise_evidence", hostile)
    agent = _agent(fleet)
    resp = fleet.post(agent, fleet.challenge(agent), send_log=True)
    assert resp.status_code == 200, resp.json
    assert resp.json["status"] == "untrusted"
    (event,) = _feed(fleet)
    assert event["attestation_id"] == resp.json["attestation_id"]
    assert event["reason"] == resp.json["reason"]
    assert event["reason"].startswith('event_log_malformed: a"},"attestation_id":"1"')
    assert "\\x00" in event["reason"] and "\\ud800" in event["reason"]
    assert "\x00" not in event["reason"] and "\ud800" not in event["reason"]
    assert "x" not in event
    with fleet.store.read() as db:
        stored = db.get(Attestation, int(resp.json["attestation_id"]))
        assert stored is not None and stored.reason == event["reason"]


def test_the_payload_head_is_the_payload_without_its_id_and_brace() -> None:
    payload = {"id": "e", "reason": HOSTILE, "golden": ["f@1"], "attestation_id": None}
    head = fullrecord.payload_head(payload)
    assert json.loads(head + ',"attestation_id":"42"}') == {**payload, "attestation_id": "42"}
