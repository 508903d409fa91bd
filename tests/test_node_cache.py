"""Issue 14: node snapshots kept between a node's attestations (``Services.nodes``) are only a
cache — two verifier instances on one database (SQLite and a real PostgreSQL), where the other
instance changes the node or the golden sets behind the first one's back: the first must judge
the next evidence by the database, never by what it kept."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from testkit.service import FakeAgentForLoad
from tests.postgres import postgres_server, postgres_url  # noqa: F401
from tests.test_fleet_protocol import CBOR, LOG, Fleet, another_instance, make_fleet
from verifier.service import inventory
from verifier.store import hotpath, prepared
from verifier.store.models import Attestation, GoldenSetRow, Node


@pytest.fixture(params=["sqlite", "postgres"])
def two(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Fleet, Fleet]]:
    """Two instances on one database; golden ``f`` applies to nodes labelled pool=web."""
    url = (
        str(tmp_path / "v.db")
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    one = make_fleet(url, {"pool": "web"})
    other = another_instance(url, one.clock)
    try:
        yield one, other
    finally:
        other.store.close()
        one.store.close()


def _agent(f: Fleet, name: str = "n1") -> FakeAgentForLoad:
    agent = FakeAgentForLoad(name, LOG, labels={"pool": "web"})
    agent.enroll_directly(f.store)
    return agent


def _round(f: Fleet, agent: FakeAgentForLoad, nonce: bytes | None = None) -> Any:
    """One evidence POST: with ``nonce``, else the agent's kept next nonce, else a challenge's
    (the log is sent when the verifier does not hold it for this boot)."""
    if nonce is None:
        nonce = agent.next_nonce or f.challenge(agent)
    resp = f.post(agent, nonce, send_log=agent.next_nonce is None)
    if resp.status_code == 200:
        agent.next_nonce = bytes.fromhex(resp.json["next_challenge"]["nonce"])
    return resp


def _trusted_and_kept(f: Fleet, agent: FakeAgentForLoad) -> None:
    """Rounds until ``f`` keeps the node's snapshot: a full record, then a counted repeat."""
    for repeat in (0, 1):
        resp = _round(f, agent)
        assert (resp.status_code, resp.json["status"], resp.json["repeat"]) == (
            200,
            "trusted",
            repeat,
        ), resp.json
    assert f.svc.nodes.get(agent.name) is not None


def _kept_by_one(two: tuple[Fleet, Fleet]) -> tuple[Fleet, Fleet, FakeAgentForLoad]:
    """Both instances, and node n1 kept (trusted and counted) by the first."""
    one, other = two
    agent = _agent(one)
    _trusted_and_kept(one, agent)
    return one, other, agent


def _records(f: Fleet) -> int:
    with f.store.read() as db:
        return len(db.scalars(select(Attestation.id)).all())


class Statements:
    """Every SQL statement the instance sends: the hot path's prepared ones and SQLAlchemy's."""

    def __init__(self, f: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sql: list[str] = []
        real = prepared.Prepared.run

        def run(p: prepared.Prepared, s: Any, params: Any) -> Any:
            self.sql.append(p.sql)
            return real(p, s, params)

        monkeypatch.setattr(prepared.Prepared, "run", run)
        event.listen(f.store.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        self.sql.append(sql)


def test_a_kept_snapshot_makes_a_steady_round_one_write_and_no_read(
    two: tuple[Fleet, Fleet], monkeypatch: pytest.MonkeyPatch
) -> None:
    one, _ = two
    agent = _agent(one)
    _trusted_and_kept(one, agent)
    seen = Statements(one, monkeypatch)
    resp = _round(one, agent)
    assert (resp.status_code, resp.json["status"], resp.json["repeat"]) == (200, "trusted", 2)
    writes = [q for q in seen.sql if q.lstrip().upper().split()[0] in ("WITH", "UPDATE", "INSERT")]
    if one.store.is_sqlite:  # refresh, nonce, count in BEGIN IMMEDIATE … COMMIT
        assert len(writes) == 3 and not any(
            q.lstrip().upper().startswith("SELECT") for q in seen.sql
        )
    else:  # one statement: one round trip to the database for the whole attestation
        assert seen.sql == writes and len(writes) == 1 and writes[0].startswith("WITH refreshed")
    assert _records(one) == 1


def test_an_ak_replaced_by_another_instance_is_what_the_next_quote_is_checked_with(
    two: tuple[Fleet, Fleet],
) -> None:
    one, other = two
    old = _agent(one)
    _trusted_and_kept(one, old)
    new = _agent(other)  # the same name, a new TPM key, written by the other instance
    new.next_nonce = None
    resp = _round(one, new)  # the kept AK would refuse this quote: the database's verifies it
    assert (resp.status_code, resp.json["status"], resp.json["repeat"]) == (200, "trusted", 0)
    refused = _round(one, old, one.challenge(old))  # the old key's quote no longer verifies
    assert (refused.status_code, refused.json["error"]["code"]) == (422, "bad_signature")


def test_labels_changed_by_another_instance_select_the_golden_sets_of_the_next_round(
    two: tuple[Fleet, Fleet],
) -> None:
    one, other, agent = _kept_by_one(two)
    inventory.set_labels(other.svc, "n1", {"pool": "db"}, "moved", "admin")
    resp = _round(one, agent)  # no golden set applies to pool=db: never the kept trusted verdict
    assert resp.status_code == 200 and resp.json["status"] != "trusted", resp.json
    assert resp.json["repeat"] == 0
    with one.store.read() as db:
        node = db.scalars(select(Node)).one()
        assert node.labels == {"pool": "db"} and node.state != "trusted"


def test_labels_and_ak_written_before_any_reappraisal_are_what_the_next_round_is_judged_by(
    two: tuple[Fleet, Fleet],
) -> None:
    """The window between an admin change's commit and the re-appraisal that follows it (its own
    transaction): only the labels, or only the AK, changed — no column the reuse compares."""
    one, other, agent = _kept_by_one(two)
    with other.store.write() as db:
        db.scalars(select(Node)).one().labels = {"pool": "db"}
    resp = _round(one, agent)
    assert resp.status_code == 200 and resp.json["status"] != "trusted", resp.json
    web = _agent(other, "n2")
    _trusted_and_kept(one, web)
    stolen = FakeAgentForLoad("n2", LOG, labels={"pool": "web"})  # another key, same name
    with other.store.write() as db:
        node = db.scalars(select(Node).where(Node.name == "n2")).one()
        node.ak_public, node.ak_name = stolen.ak.raw, stolen.ak.name
    refused = _round(one, web)  # the kept AK would verify this quote: the stored one does not
    assert (refused.status_code, refused.json["error"]["code"]) == (422, "bad_signature")
    stolen.clock = web.clock
    resp = _round(one, stolen, one.challenge(stolen))
    assert resp.status_code == 200, resp.json


def test_a_golden_version_revoked_before_its_reappraisal_ran_is_never_counted_trusted(
    two: tuple[Fleet, Fleet],
) -> None:
    """The window between a revocation's commit and the re-appraisal of the node (another
    instance, frozen or slow): the node's row is unchanged, the golden version moved."""
    one, other, agent = _kept_by_one(two)
    with other.store.write() as db:  # the status change's own transaction, no re-appraisal yet
        row = db.scalars(select(GoldenSetRow).where(GoldenSetRow.name == "f")).one()
        row.status, row.reason = "revoked", "CVE"
        hotpath.bump_version(db)
    resp = _round(one, agent)
    assert resp.status_code == 200 and resp.json["status"] == "untrusted", resp.json
    assert resp.json["repeat"] == 0 and _records(one) == 2


def test_a_node_deleted_or_renamed_by_another_instance_is_not_attested_from_the_kept_copy(
    two: tuple[Fleet, Fleet],
) -> None:
    one, other, agent = _kept_by_one(two)
    inventory.move_node(other.svc, "n1", "n2", "renamed", "admin")
    resp = _round(one, agent)
    assert (resp.status_code, resp.json["error"]["code"]) == (404, "node_not_enrolled")
    inventory.delete_node(other.svc, "n2", "gone", "admin")
    again = _agent(other)  # enrolled anew under the old name (SQLite may reuse the id)
    again.next_nonce = None
    resp = _round(one, again)
    assert (resp.status_code, resp.json["status"], resp.json["repeat"]) == (200, "trusted", 0)


def test_a_node_attesting_through_both_instances_in_turn_is_counted_once_per_round(
    two: tuple[Fleet, Fleet],
) -> None:
    """Each instance keeps its own copy, whose TPM clock falls behind while the other counts:
    the write holds the stored clock, so every round counts once and none is refused."""
    one, other, agent = _kept_by_one(two)
    for n in range(2, 8):
        f = other if n % 2 else one
        f.clock[0] = f.clock[0] + dt.timedelta(seconds=10)
        resp = _round(f, agent)
        assert (resp.status_code, resp.json["status"], resp.json["repeat"]) == (200, "trusted", n)
    assert _records(one) == 1
    with one.store.read() as db:
        assert db.scalars(select(Node.last_clock)).one() == agent.clock


def test_an_older_quote_after_a_newer_one_was_counted_elsewhere_is_appraised_in_full(
    two: tuple[Fleet, Fleet],
) -> None:
    """The kept copy's TPM clock says "forward"; the stored one (the other instance counted a
    later quote) says not: the database's clock decides, so no reuse."""
    one, other, agent = _kept_by_one(two)
    earlier_nonce, later_nonce = one.challenge(agent), other.challenge(agent)
    earlier = agent.evidence(earlier_nonce, send_log=False)
    later = agent.evidence(later_nonce, send_log=False)
    url = f"/v1/nodes/{agent.name}/evidence"
    counted = other.client.post(url, data=later, headers=CBOR)
    assert (counted.status_code, counted.json["repeat"]) == (200, 2), counted.json
    late = one.client.post(url, data=earlier, headers=CBOR)
    assert late.status_code == 200 and late.json["repeat"] == 0, late.json
    assert _records(one) == 2


def test_a_full_record_keeps_the_snapshot_the_database_holds(
    two: tuple[Fleet, Fleet], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the one-statement full record leaves the node as the snapshot it keeps
    (its new row version from the trigger): the node's next round reads nothing."""
    one, _ = two
    agent = _agent(one)
    first = _round(one, agent)
    assert (first.status_code, first.json["status"], first.json["repeat"]) == (200, "trusted", 0)
    kept = one.svc.nodes.get(agent.name)
    if one.store.is_sqlite:  # ``record`` in a write transaction: the next round reads the row
        assert kept is None
        return
    with one.store.read() as db:
        fresh = hotpath.node_snapshot(db, agent.name)
    assert fresh is not None and fresh.last_attestation_id == int(first.json["attestation_id"])
    assert kept == (fresh, one.svc.golden.version)
    seen = Statements(one, monkeypatch)
    again = _round(one, agent)
    assert (again.status_code, again.json["status"], again.json["repeat"]) == (200, "trusted", 1)
    assert len(seen.sql) == 1 and seen.sql[0].startswith("WITH refreshed"), seen.sql
