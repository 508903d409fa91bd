"""Node states and verdict statuses are enums end to end: the store writes only their values (the
same strings as before the enums, so existing databases read unchanged), refuses anything else,
and reads members back."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import StatementError

from tests import test_service_api as api
from tests.postgres import postgres_server, postgres_url  # noqa: F401
from tests.test_service_api import T0, Env, add_node
from verifier.store import NodeState, repo
from verifier.store.models import Attestation

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
