"""Node states and verdict statuses are enums end to end: the store writes only their values (the
same strings as before the enums, so existing databases read unchanged), refuses anything else,
and reads members back; one ``record`` moves a node's state for new evidence and re-appraisal."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text
from sqlalchemy.exc import StatementError

from tests import test_service_api as api
from tests.postgres import postgres_server, postgres_url  # noqa: F401
from tests.test_service_api import T0, Env, add_node
from verifier.appraisal import VerdictStatus
from verifier.service.attestation import QuotedEvidence, record
from verifier.service.golden_policy import Assessment, failed
from verifier.store import AttestationSource, NodeState, repo
from verifier.store.models import Attestation, Node

env = api.env  # the fixture: the real app on SQLite and PostgreSQL


def _raw_state(e: Env, name: str) -> object:
    with e.store.read() as db:
        return db.execute(text("SELECT state FROM nodes WHERE name = :n"), {"n": name}).scalar()


def test_a_node_state_outside_the_enum_is_refused_by_the_store(env: Env) -> None:
    with pytest.raises(StatementError, match="'happy' is not a valid NodeState"):
        add_node(env.store, "n2", state="happy")
    with env.store.read() as db:
        assert repo.get_node(db, "n2") is None


def test_a_state_is_stored_as_its_string_and_read_back_as_the_member(env: Env) -> None:
    add_node(env.store, "n2", state="trusted")
    assert _raw_state(env, "n2") == "trusted"
    with env.store.read() as db:
        node = repo.get_node(db, "n2")
        assert node is not None and node.state is NodeState.TRUSTED


def test_a_row_written_as_a_plain_string_reads_as_its_member(env: Env) -> None:
    """What migrations 0001–0003 and the code before the enums wrote: the same strings."""
    with env.store.write() as db:
        db.execute(text("UPDATE nodes SET state = 'quarantined' WHERE name = 'n1'"))
    with env.store.read() as db:
        node = repo.get_node(db, "n1")
        assert node is not None and node.state is NodeState.QUARANTINED
    resp = env.client.get("/v1/nodes?state=quarantined", headers=env.h("admin"))
    assert [n["state"] for n in resp.json["nodes"]] == ["quarantined"]


def test_a_stored_state_outside_the_enum_fails_loudly_on_read(env: Env) -> None:
    with env.store.write() as db:
        db.execute(text("UPDATE nodes SET state = 'happy' WHERE name = 'n1'"))
    with (
        pytest.raises(ValueError, match="'happy' is not a valid NodeState"),
        env.store.read() as db,
    ):
        repo.get_node(db, "n1")


def test_an_attestation_status_outside_the_verdict_enum_is_refused(env: Env) -> None:
    node_id = add_node(env.store, "n2")
    refused = pytest.raises(StatementError, match="'fine' is not a valid VerdictStatus")
    with refused, env.store.write() as db:
        db.add(
            Attestation(
                node_id=node_id, created_at=T0, source="evidence", status="fine", reason="",
                verdict={}, nonce=b"", quote=b"", signature=b"", pcrs={},
                event_log_sha256=None, agent_version="", reboot=False, golden_versions=[],
            )
        )  # fmt: skip


def test_the_node_state_filter_names_the_enum_values(env: Env) -> None:
    resp = env.client.get("/v1/nodes?state=happy", headers=env.h("admin"))
    assert (resp.status_code, resp.json["error"]) == (
        400,
        {
            "code": "bad_query",
            "message": "state must be one of enrolled, trusted, untrusted, unknown, stale, "
            "quarantined",
        },
    )


EV = QuotedEvidence(b"n" * 32, b"quote", b"sig", {"sha256": {}}, None, "agent/1", 4, 0)
TRUSTED = Assessment(VerdictStatus.TRUSTED, "all 3 checks passed", [], ["fleet@1"], {})


def _record(e: Env, name: str, a: Assessment, *, at: dt.datetime, quoted_at: dt.datetime) -> Node:
    with e.store.write() as db:
        node = repo.get_node(db, name)
        assert node is not None
        record(db, node, EV, a, source=AttestationSource.EVIDENCE, now=at, quoted_at=quoted_at)
        return node


def test_record_moves_the_state_and_freshness_comes_only_from_the_quote(env: Env) -> None:
    later = T0 + dt.timedelta(hours=1)
    node = _record(env, "n1", TRUSTED, at=later, quoted_at=T0)
    assert (node.state, node.state_since, node.reason) == (
        NodeState.TRUSTED,
        later,
        "all 3 checks passed",
    )
    assert node.last_success_at == T0  # the quote's time, not the time of recording
    assert node.golden_versions == ["fleet@1"]
    with env.store.read() as db:
        [row] = repo.node_attestations(db, node.id)
    assert node.last_attestation_id == row.id
    assert (row.status, row.source, row.nonce, row.reset_count) == (
        VerdictStatus.TRUSTED,
        AttestationSource.EVIDENCE,
        b"n" * 32,
        4,
    )


def test_record_keeps_a_quarantined_node_quarantined(env: Env) -> None:
    add_node(env.store, "q1", state="quarantined")
    bad = failed(VerdictStatus.UNTRUSTED, "pcr_replay_mismatch", "PCR4 differs")
    node = _record(env, "q1", bad, at=T0, quoted_at=T0)
    assert (node.state, node.reason) == (NodeState.QUARANTINED, "test")
    assert node.last_attestation_id is not None and node.last_success_at is None
