"""The store against SQLite and a real PostgreSQL: schema, nonces, logs, tokens."""

from __future__ import annotations

import datetime as dt
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text

from tests.postgres import postgres_server, postgres_url  # noqa: F401
from verifier.store import Store, repo, upgrade
from verifier.store.migrate import current_revision, head_revision
from verifier.store.models import Base, EventLogBlob, Node, Nonce, ReappraisalJob

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = str(tmp_path / "assay.db")
    else:
        url = request.getfixturevalue("postgres_url")
    s = Store(url)
    upgrade(s)
    try:
        yield s
    finally:
        s.close()


def _node(s: Store, name: str = "n1") -> int:
    with s.write() as db:
        node = Node(
            name=name,
            ek_public=b"ek",
            ek_fingerprint=name.encode().hex().ljust(64, "0"),
            ak_public=b"ak",
            ak_name=b"n",
            labels={"rack": "r1"},
            state="enrolled",
            state_since=NOW,
            reason="",
            enrolled_at=NOW,
            golden_versions=[],
        )
        db.add(node)
        db.flush()
        return node.id


def test_migrations_create_exactly_the_models_schema(store: Store) -> None:
    assert current_revision(store) == head_revision() == "0010"
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_twice_is_a_no_op(store: Store) -> None:
    assert upgrade(store) == "0010"


def _row_version_migration() -> Any:
    path = (
        Path(__file__).parent.parent / "verifier/store/migrations/versions/0009_node_row_version.py"
    )
    spec = importlib.util.spec_from_file_location("m0009", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_change_of_a_node_but_the_refresh_bumps_its_row_version(store: Store) -> None:
    """The database keeps ``nodes.row_version`` (what a kept node snapshot is held to): every
    column but the three the refresh of an unchanged re-attestation sets is in the trigger —
    including any column added later, which this test finds."""
    m = _row_version_migration()
    columns = {c.name for c in Node.__table__.columns}
    assert set(m.VERSIONED) | set(m.REFRESHED) | {"row_version"} == columns
    node_id = _node(store)
    with store.read() as db:
        start = db.scalars(select(Node.row_version).where(Node.id == node_id)).one()
    assert 0 < start < 2**48  # random: a reused id never continues an old row's versions
    expected = start
    for column in sorted(columns - {"row_version"}):
        with store.write() as db:  # named in SET, even unchanged: that is a change to the trigger
            db.execute(
                text(f"UPDATE nodes SET {column} = {column} WHERE id = :id"), {"id": node_id}
            )
        expected += column not in m.REFRESHED
        with store.read() as db:
            got = db.scalars(select(Node.row_version).where(Node.id == node_id)).one()
        assert got == expected, column
    with store.write() as db:  # an ORM change too
        node = db.get(Node, node_id)
        assert node is not None
        node.labels = {"rack": "r2"}
    with store.read() as db:
        assert db.scalars(select(Node.row_version).where(Node.id == node_id)).one() == expected + 1


def test_times_round_trip_as_aware_utc(store: Store) -> None:
    node_id = _node(store)
    with store.read() as db:
        node = db.get(Node, node_id)
        assert node is not None
        assert node.enrolled_at == NOW
        assert node.enrolled_at.tzinfo is dt.UTC
        assert node.labels == {"rack": "r1"}


def test_nonce_is_consumed_once_then_reported_reused(store: Store) -> None:
    node_id = _node(store)
    with store.write() as db:
        nonce = repo.issue_nonce(db, node_id, lifetime=dt.timedelta(seconds=60), now=NOW).nonce
    assert len(nonce) == 32
    with store.write() as db:
        assert repo.consume_nonce(db, node_id, nonce, NOW) is None
    with store.write() as db:
        assert repo.consume_nonce(db, node_id, nonce, NOW) == "nonce_reused"


def test_nonce_refusals_name_the_reason(store: Store) -> None:
    a, b = _node(store, "a"), _node(store, "b")
    with store.write() as db:
        nonce = repo.issue_nonce(db, a, lifetime=dt.timedelta(seconds=60), now=NOW).nonce
    with store.write() as db:
        assert repo.consume_nonce(db, b, nonce, NOW) == "nonce_wrong_node"
        assert repo.consume_nonce(db, a, b"\x00" * 32, NOW) == "nonce_unknown"
        later = NOW + dt.timedelta(seconds=61)
        assert repo.consume_nonce(db, a, nonce, later) == "nonce_expired"
    with store.write() as db:  # none of the refusals used it up
        assert repo.consume_nonce(db, a, nonce, NOW + dt.timedelta(seconds=59)) is None


def test_concurrent_consumers_win_exactly_once(store: Store) -> None:
    node_id = _node(store)
    with store.write() as db:
        nonce = repo.issue_nonce(db, node_id, lifetime=dt.timedelta(seconds=60), now=NOW).nonce
    results: list[str | None] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def consume() -> None:
        barrier.wait()
        with store.write() as db:
            r = repo.consume_nonce(db, node_id, nonce, NOW)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=consume) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=str) == [None] + ["nonce_reused"] * 7


def test_challenges_store_nothing_and_every_nonce_stays_good(store: Store) -> None:
    """Stateless nonces: issuing stores nothing, so no number of challenges uses one up (the
    challenge is unauthenticated); only a used nonce is kept, until it expires."""
    node_id = _node(store)
    with store.write() as db:
        issued = [
            repo.issue_nonce(db, node_id, lifetime=dt.timedelta(seconds=60), now=NOW)
            for _ in range(50)
        ]
    assert len({n.nonce for n in issued}) == 50
    assert {n.expires_at for n in issued} == {NOW + dt.timedelta(seconds=60)}
    with store.read() as db:
        assert db.scalar(select(func.count()).select_from(Nonce)) == 0
    with store.write() as db:
        assert repo.consume_nonce(db, node_id, issued[0].nonce, NOW) is None
        assert repo.consume_nonce(db, node_id, issued[-1].nonce, NOW) is None
    with store.read() as db:
        assert db.scalar(select(func.count()).select_from(Nonce)) == 2
    with store.write() as db:  # an expired used nonce is forgotten by the next consume
        later = NOW + dt.timedelta(seconds=61)
        fresh = repo.issue_nonce(db, node_id, lifetime=dt.timedelta(seconds=60), now=later)
        assert repo.consume_nonce(db, node_id, fresh.nonce, later) is None
    with store.read() as db:
        assert db.scalar(select(func.count()).select_from(Nonce)) == 1


def test_a_forged_or_altered_nonce_is_unknown(store: Store) -> None:
    node_id = _node(store)
    with store.write() as db:
        nonce = repo.issue_nonce(db, node_id, lifetime=dt.timedelta(seconds=60), now=NOW).nonce
    with store.write() as db:
        for i in range(32):  # any bit of block or tag
            altered = nonce[:i] + bytes([nonce[i] ^ 0x80]) + nonce[i + 1 :]
            assert repo.consume_nonce(db, node_id, altered, NOW) == "nonce_unknown"
        assert repo.consume_nonce(db, node_id, nonce[:31], NOW) == "nonce_unknown"
        assert repo.consume_nonce(db, node_id, nonce, NOW) is None


def test_every_instance_shares_one_nonce_key(store: Store) -> None:
    with store.write() as db:
        first = repo.nonce_key(db, NOW)
    with store.write() as db:
        assert repo.nonce_key(db, NOW) == first and len(first) == 32


def test_event_log_is_stored_once_per_digest(store: Store) -> None:
    for _ in range(3):
        with store.write() as db:
            repo.put_event_log(db, "ab" * 32, b"log bytes", NOW)
    with store.read() as db:
        assert db.scalar(select(func.count()).select_from(EventLogBlob)) == 1
        assert repo.get_event_log(db, "ab" * 32) == b"log bytes"
        assert repo.get_event_log(db, "cd" * 32) is None


def test_single_use_token_is_used_once(store: Store) -> None:
    with store.write() as db:
        secret, row = repo.create_token(db, "enroll", expires_at=None, single_use=True, now=NOW)
        token_id = row.id
    with store.read() as db:
        found = repo.find_token(db, secret)
        assert found is not None and found.role == "enroll"
        assert repo.find_token(db, secret + "x") is None
    with store.write() as db:
        assert repo.use_single_use_token(db, token_id, NOW)
    with store.write() as db:
        assert not repo.use_single_use_token(db, token_id, NOW)


def test_token_role_must_be_known(store: Store) -> None:
    with store.write() as db, pytest.raises(ValueError, match="unknown role"):
        repo.create_token(db, "root", expires_at=None)


def test_golden_assignment_by_label_selector(store: Store) -> None:
    with store.write() as db:
        assert repo.assign(db, "fleet", {"pool": "gpu"}, NOW)
        assert not repo.assign(db, "fleet", {"pool": "gpu"}, NOW)
        assert repo.assign(db, "base", {}, NOW)
    with store.read() as db:
        assignments = repo.list_assignments(db)
        assert repo.golden_names_for({"pool": "gpu", "x": "y"}, assignments) == {"fleet", "base"}
        assert repo.golden_names_for({"pool": "cpu"}, assignments) == {"base"}


def test_sqlite_writers_in_many_threads_never_hit_database_is_locked(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "busy.db"))
    upgrade(s)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(20):
                with s.write() as db:
                    repo.audit(db, f"t{i}", "test", f"x{j}")
                    db.flush()
                    repo.list_audit(db, limit=1)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with s.read() as db:
        assert len(repo.list_audit(db, limit=1000)) == 160
    s.close()


def test_upgrade_to_0010_makes_every_earlier_reappraisal_job_a_golden_one(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "old.db"))
    try:
        assert upgrade(s, "0009") == "0009"
        with s.engine.begin() as conn:  # a job left unfinished by a verifier before 0010
            conn.execute(
                text(
                    "INSERT INTO reappraisal_jobs (golden_name, reason, actor, created_at, cursor)"
                    " VALUES ('f', 'f@1 revoked: CVE', 'admin', :at, 7)"
                ),
                {"at": NOW.replace(tzinfo=None)},
            )
        assert upgrade(s) == "0010"
        with s.read() as db:
            [job] = db.scalars(select(ReappraisalJob))
            assert (job.kind, job.golden_name, job.cursor) == ("golden", "f", 7)
    finally:
        s.close()


def test_upgrade_from_0001_keeps_tokens_and_gives_them_no_labels(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "old.db"))
    try:
        assert upgrade(s, "0001") == "0001"
        with s.engine.begin() as conn:  # the 0001 columns, not today's model
            conn.execute(
                text(
                    "INSERT INTO tokens (id, secret_sha256, role, description, single_use,"
                    " created_at) VALUES ('t1', :h, 'enroll', '', false, :at)"
                ),
                {"h": repo.token_hash("s1"), "at": NOW.replace(tzinfo=None)},
            )
        assert upgrade(s) == "0010"
        with s.read() as db:
            token = repo.find_token(db, "s1")
            assert token is not None and token.labels == {}
    finally:
        s.close()


def test_nonces_under_two_keys_interleaved_each_check_only_under_their_own() -> None:
    """The AES contexts are kept between nonces (by key and direction): interleaving keys and
    directions never mixes them up, and a block that is not one AES block is refused."""
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    life = dt.timedelta(minutes=3)
    keys = [bytes([i]) * 32 for i in (1, 2)]
    made = [
        (k, n, repo.make_nonce(n, lifetime=life, now=now, key=k)) for n in range(40) for k in keys
    ]
    for key, node, issued in made:
        assert repo.check_nonce(node, issued.nonce, now, key).refused is None
        other = keys[1] if key == keys[0] else keys[0]
        assert repo.check_nonce(node, issued.nonce, now, other).refused == "nonce_unknown"
        assert repo.check_nonce(node + 1, issued.nonce, now, key).refused == "nonce_wrong_node"
    assert len({issued.nonce for _, _, issued in made}) == len(made)
    with pytest.raises(ValueError, match="16 bytes"):
        repo._nonce_block(keys[0][:16], b"x" * 17, decrypt=True)
