"""The hot path's prepared statements (``verifier.store.prepared``) against SQLAlchemy's own
execution of the same statements, on SQLite and PostgreSQL: same rows, same Python values
(aware UTC datetimes, enum members, JSON as dicts), same writes, SQLAlchemy's errors."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import bindparam, exc, insert, select

from tests.postgres import either_store, postgres_server, postgres_url  # noqa: F401
from verifier.store import NodeState, Store, StoreUnavailable, hotpath, upgrade
from verifier.store.models import Node, Nonce
from verifier.store.prepared import Prepared, prepared

T0 = dt.datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


@pytest.fixture
def store(either_store: Store) -> Store:  # noqa: F811
    return _seeded(either_store)


def _seeded(s: Store) -> Store:
    """``s`` with one trusted node, ``n1``."""
    with s.write() as db:
        db.add(
            Node(
                name="n1", ek_public=b"ek", ek_fingerprint="f" * 64, ak_public=b"\x00ak\xff",
                ak_name=b"name", labels={"pool": "web", "zone": "é"}, state=NodeState.TRUSTED,
                state_since=T0, reason="all 28 checks passed", enrolled_at=T0,
                golden_versions=["fleet@1", "fleet@2"], last_reset_count=3, last_restart_count=0,
                verdict_key="k" * 64, last_clock=12345678901, last_success_at=T0,
                last_attestation_id=7,
            )
        )  # fmt: skip
    return s


def test_a_prepared_read_returns_what_sqlalchemy_returns(store: Store) -> None:
    nonce = bytes(range(32))
    with store.read() as db:
        ours = prepared(db, hotpath._READ).first(db, {"name": "n1", "nonce": nonce})
        theirs = db.connection().execute(hotpath._READ, {"name": "n1", "nonce": nonce}).first()
    assert theirs is not None and ours is not None
    assert ours == tuple(theirs)
    snap = hotpath.NodeSnapshot(*ours[:-2])
    assert snap.state is NodeState.TRUSTED
    assert snap.state_since == T0 and snap.state_since.tzinfo is dt.UTC
    assert snap.labels == {"pool": "web", "zone": "é"}
    assert snap.golden_versions == ["fleet@1", "fleet@2"]
    assert snap.ak_public == b"\x00ak\xff" and snap.last_clock == 12345678901


def test_the_hot_writes_land_as_sqlalchemy_reads_them(store: Store) -> None:
    with store.read() as db:
        read = hotpath.read_for_attestation(db, "n1", b"x" * 32)
    assert read is not None and read.nonce_used is False
    snap = read.node
    later = T0 + dt.timedelta(seconds=61)
    with store.write() as db:
        assert hotpath.use_nonce(db, snap.id, b"x" * 32, later, later + dt.timedelta(minutes=5))
        assert not hotpath.use_nonce(db, snap.id, b"x" * 32, later, later)  # used: refused
    with store.write() as db:
        assert hotpath.refresh_unchanged_node(db, snap, later, 12345679901, 0)
    with store.read() as db:
        node = db.scalars(select(Node).where(Node.name == "n1")).one()
        used = db.scalars(select(Nonce)).one()
        assert hotpath.read_for_attestation(db, "n1", b"x" * 32).nonce_used  # type: ignore[union-attr]
    assert node.last_attested_at == later and node.last_success_at == later
    assert node.last_clock == 12345679901
    assert used.created_at == later and used.used_at == later
    assert used.expires_at == later + dt.timedelta(minutes=5)
    stale = hotpath.NodeSnapshot(**{**_fields(snap), "verdict_key": "other"})
    with store.write() as db:  # the node changed since it was read: nothing is refreshed
        assert not hotpath.refresh_unchanged_node(db, stale, later, 12345679999, 0)


def test_the_refresh_holds_the_row_version_the_golden_version_and_the_clock(store: Store) -> None:
    """What a kept snapshot relies on: the refresh writes nothing when any other column of the
    node changed since (the row's version), when the golden version moved, or when the stored
    TPM clock is not behind this quote's (another worker counted a later one)."""
    with store.raw_read() as raw:
        snap = hotpath.read_for_attestation(raw, "n1", b"x" * 32).node  # type: ignore[union-attr]
    later = T0 + dt.timedelta(seconds=61)
    with store.write() as db:
        assert not hotpath.refresh_unchanged_node(db, snap, later, 12345678901, 0)  # same clock
        assert not hotpath.refresh_unchanged_node(db, snap, later, 12345679901, 1)  # golden moved
        assert hotpath.refresh_unchanged_node(db, snap, later, 12345679901, 0)
    with store.write() as db:  # the refresh keeps the version: the same snapshot still holds
        assert hotpath.refresh_unchanged_node(db, snap, later, 12345679902, 0)
    with store.write() as db:  # an admin's change the reuse never compared: the labels
        db.scalars(select(Node)).one().labels = {"pool": "db"}
    with store.write() as db:
        assert not hotpath.refresh_unchanged_node(db, snap, later, 12345679903, 0)
        hotpath.bump_version(db)
    with store.raw_read() as raw:
        read = hotpath.read_for_attestation(raw, "n1", b"x" * 32)
    assert read is not None and read.golden_version == 1
    assert read.node.row_version == snap.row_version + 1 and read.node.labels == {"pool": "db"}
    with store.write() as db:
        assert not hotpath.refresh_unchanged_node(db, read.node, later, 12345679903, 0)
        assert hotpath.refresh_unchanged_node(db, read.node, later, 12345679903, 1)


def _fields(snap: hotpath.NodeSnapshot) -> dict[str, object]:
    return {k: getattr(snap, k) for k in hotpath.NodeSnapshot.__slots__}


def test_a_statement_with_python_side_defaults_is_refused(store: Store) -> None:
    # Node.reason has a Python-side default: SQLAlchemy's execution context would fill it in.
    stmt = insert(Node).values(name=bindparam("name"))
    with store.read() as db, pytest.raises(TypeError, match="Python-side"):
        Prepared(stmt, db.get_bind().dialect)


def test_a_prepared_statement_is_made_once_per_statement_and_dialect(store: Store) -> None:
    q = select(Node.name).where(Node.id == bindparam("id"))
    with store.read() as db:
        first = prepared(db, q)
        assert prepared(db, q) is first
        assert prepared(db, select(Node.name)) is not first
        assert first.first(db, {"id": 999}) is None
        assert first.sql.startswith("SELECT nodes.name")  # SQLAlchemy wrote the SQL


# -- Raw: the hot path's connections without a Session -------------------------------------------


def _nonces(store: Store) -> list[bytes]:
    with store.read() as db:
        return sorted(db.scalars(select(Nonce.nonce)))


def test_a_raw_write_commits_when_the_block_ends_and_rolls_back_when_it_raises(
    store: Store,
) -> None:
    """SQLite: one transaction of any statements. PostgreSQL: one statement, which commits
    itself (no transaction open between two messages); a second one is refused."""
    with store.raw_read() as raw:
        read = hotpath.read_for_attestation(raw, "n1", b"a" * 32)
    assert read is not None and read.node.state is NodeState.TRUSTED
    assert read.node.state_since == T0 and read.node.labels == {"pool": "web", "zone": "é"}
    node_id, later = read.node.id, T0 + dt.timedelta(seconds=61)
    with store.raw_write() as raw:
        assert hotpath.use_nonce(raw, node_id, b"a" * 32, later, later)
        if store.is_sqlite:
            assert hotpath.refresh_unchanged_node(raw, read.node, later, 12345679901, 0)
        else:
            with pytest.raises(RuntimeError, match="one statement"):
                hotpath.refresh_unchanged_node(raw, read.node, later, 12345679901, 0)
    with pytest.raises(RuntimeError, match="the caller"), store.raw_write() as raw:
        assert hotpath.use_nonce(raw, node_id, b"b" * 32, later, later)
        raise RuntimeError("the caller failed after writing")
    # SQLite rolled the second block back; PostgreSQL's statement had committed itself.
    assert _nonces(store) == ([b"a" * 32] if store.is_sqlite else [b"a" * 32, b"b" * 32])
    with store.read() as db:
        node = db.scalars(select(Node).where(Node.name == "n1")).one()
        assert (node.last_attested_at, node.last_clock) == (
            (later, 12345679901) if store.is_sqlite else (None, 12345678901)
        )
    with store.raw_read() as raw:  # a raw read sees what was committed
        assert hotpath.read_for_attestation(raw, "n1", b"a" * 32).nonce_used  # type: ignore[union-attr]


def test_a_raw_read_leaves_its_connection_as_the_pool_lent_it(store: Store) -> None:
    """PostgreSQL reads in autocommit; the connection goes back to the pool transactional, so a
    Session's write that fails after it still rolls back whole."""
    for _ in range(store.engine.pool.size() + 1):  # every pooled connection, once raw
        with store.raw_read() as raw:
            hotpath.read_for_attestation(raw, "n1", b"c" * 32)
    with store.read() as db:
        node_id = db.scalars(select(Node.id)).one()
    with pytest.raises(RuntimeError), store.write() as db:
        hotpath.use_nonce(db, node_id, b"c" * 32, T0, T0)
        raise RuntimeError("after the write")
    assert _nonces(store) == []


@pytest.mark.parametrize("write", ["write", "raw_write"])
def test_database_errors_are_sqlalchemys_and_a_locked_sqlite_is_unavailable(
    store: Store, write: str
) -> None:
    """Through a Session's transaction and a raw connection alike."""
    cols = ("node_id", "nonce", "created_at", "expires_at", "used_at")
    dupe = insert(Nonce).values({c: bindparam(c) for c in cols})  # no ON CONFLICT
    with store.read() as db:
        node_id = db.scalars(select(Node.id)).one()
    row = {"node_id": node_id, "nonce": b"z" * 32, "created_at": T0, "expires_at": T0}
    with getattr(store, write)() as db:
        prepared(db, dupe).rowcount(db, {**row, "used_at": None})
    with pytest.raises(exc.IntegrityError), getattr(store, write)() as db:
        prepared(db, dupe).rowcount(db, {**row, "used_at": T0})
    with getattr(store, write)() as db:  # the connection that failed is usable again
        assert hotpath.use_nonce(db, node_id, b"w" * 32, T0, T0)
    assert _nonces(store) == [b"w" * 32, b"z" * 32]
    if not store.is_sqlite:
        return
    holder = sqlite3.connect(store.engine.url.database or "", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        quick = Store(str(store.engine.url.database), lock_timeout=0.2)
        with pytest.raises(StoreUnavailable, match="locked"), getattr(quick, write)() as db:
            hotpath.use_nonce(db, 1, b"y" * 32, T0, T0)
        quick.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert b"y" * 32 not in _nonces(store)


def test_the_compact_write_writes_all_or_nothing_in_one_statement_on_postgresql(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``count_repeat``: nonce, refresh and count; what each found, for every outcome on both
    databases. On PostgreSQL it is one statement, never a pipeline, and a refused nonce or a
    changed node writes nothing although nothing is rolled back (autocommit); on SQLite the
    caller's rollback undoes it."""
    from verifier.store.models import Attestation

    sent: list[str] = []
    if not store.is_sqlite:
        import psycopg

        real = psycopg.Cursor.execute

        def spy(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            sent.append(str(query))
            return real(self, query, *args, **kwargs)

        def no_pipeline(self: Any) -> Any:
            raise AssertionError("a pipeline")

        monkeypatch.setattr(psycopg.Cursor, "execute", spy)
        monkeypatch.setattr(psycopg.Connection, "pipeline", no_pipeline)
    with store.write() as db:
        node = db.scalars(select(Node)).one()
        db.add(Attestation(id=7, node_id=node.id, **_attestation_fields()))
    with store.raw_read() as raw:
        read = hotpath.read_for_attestation(raw, "n1", b"r" * 32)
    assert read is not None
    snap, later = read.node, T0 + dt.timedelta(seconds=61)
    args = (later, 12345679901, b"r" * 32, later, b"quote", b"sig", 0)
    sent.clear()
    with store.raw_write() as raw:
        got = hotpath.count_repeat(raw, snap, *args)
    assert got == hotpath.Repeat(nonce_fresh=True, node_unchanged=True, count=1)
    if not store.is_sqlite:
        assert len(sent) == 1 and sent[0].startswith("WITH refreshed AS"), sent
    with pytest.raises(RuntimeError), store.raw_write() as raw:  # the nonce again
        got = hotpath.count_repeat(raw, snap, later, 12345679902, *args[2:])
        assert got.nonce_fresh is False
        assert store.is_sqlite or got == hotpath.Repeat(False, False, 0)  # no write at all
        raise RuntimeError("refused")
    stale = hotpath.NodeSnapshot(**{**_fields(snap), "verdict_key": "other"})
    with pytest.raises(RuntimeError), store.raw_write() as raw:
        got = hotpath.count_repeat(raw, stale, later, 12345679999, b"s" * 32, later, b"q", b"s", 0)
        assert (got.nonce_fresh, got.node_unchanged) == (True, False)
        raise RuntimeError("changed")
    # A changed node whose nonce was used too: refused by the full record's nonce, later.
    with pytest.raises(RuntimeError), store.raw_write() as raw:
        got = hotpath.count_repeat(raw, stale, later, 12345679999, b"r" * 32, later, b"q", b"s", 0)
        assert got.node_unchanged is False
        raise RuntimeError("changed")
    assert _nonces(store) == [b"r" * 32]
    with store.read() as db:
        repeat = hotpath.repeats_of(db, [7])[7]
        assert (repeat.count, repeat.last_quote, repeat.last_signature) == (1, b"quote", b"sig")
        assert repeat.first_at == later and repeat.last_nonce == b"r" * 32
        assert db.scalars(select(Node.last_clock)).one() == 12345679901
        assert db.scalars(select(Node.last_attested_at)).one() == later
    third = T0 + dt.timedelta(seconds=122)
    with store.raw_read() as raw:
        snap = hotpath.read_for_attestation(raw, "n1", b"t" * 32).node  # type: ignore[union-attr]
    with store.raw_write() as raw:
        got = hotpath.count_repeat(raw, snap, third, 12345680901, b"t" * 32, third, b"q2", b"s2", 0)
    assert got == hotpath.Repeat(nonce_fresh=True, node_unchanged=True, count=2)
    with store.read() as db:
        repeat = hotpath.repeats_of(db, [7])[7]
        assert (repeat.count, repeat.first_at, repeat.last_at) == (2, later, third)
        assert (repeat.last_quote, repeat.last_nonce) == (b"q2", b"t" * 32)
        nonce = db.scalars(select(Nonce).where(Nonce.nonce == b"t" * 32)).one()
        assert (nonce.node_id, nonce.created_at, nonce.used_at) == (snap.id, third, third)
        assert nonce.expires_at == third and nonce.created_at.tzinfo is dt.UTC


def _attestation_fields() -> dict[str, Any]:
    from verifier.store.models import AttestationSource

    return {
        "created_at": T0, "nonce": b"n" * 32, "quote": b"q", "signature": b"s", "pcrs": {},
        "status": "trusted", "reason": "ok", "source": AttestationSource.EVIDENCE,
        "agent_version": "test",
    }  # fmt: skip


def test_a_sqlite_writer_waits_for_the_lock_in_python_not_in_sqlites_busy_handler(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting in SQLite's busy handler sleeps in C, which stops every request of a gevent
    worker; a write transaction instead fails fast and sleeps in ``time.sleep`` (gevent's, in a
    worker) until the lock is free, and the connection's busy timeout is put back after."""
    if not store.is_sqlite:
        return
    from verifier.store import engine

    holder = sqlite3.connect(store.engine.url.database or "", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writes
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            holder.execute("ROLLBACK")  # the other writer is done

    monkeypatch.setattr(engine.time, "sleep", sleep)
    with store.raw_write() as raw:
        assert hotpath.use_nonce(raw, 1, b"p" * 32, T0, T0)
        timeout = raw.dbapi.execute("PRAGMA busy_timeout").fetchone()[0]
    holder.close()
    assert len(pauses) == 3 and all(p < 0.01 for p in pauses), pauses
    assert timeout == engine.SQLITE_BUSY_TIMEOUT_MS
    assert _nonces(store) == [b"p" * 32]


FROZEN_WRITER = """
import datetime as dt, os, signal, sys
from verifier.store import Store, hotpath, prepared
store = Store(sys.argv[1])
later = dt.datetime(2026, 12, 1, 12, 1, tzinfo=dt.UTC)
with store.raw_read() as raw:
    snap = hotpath.read_for_attestation(raw, "n1", b"f" * 32).node
real = prepared.Prepared.run
def run(self, s, params):
    cursor = real(self, s, params)
    if "UPDATE nodes" in self.sql:  # the node's row was written: freeze right here
        print("frozen", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
    return cursor
prepared.Prepared.run = run
with store.raw_write() as raw:
    hotpath.count_repeat(raw, snap, later, 12345679999, b"f" * 32, later, b"q", b"s", 0)
"""


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:  # noqa: F811
    store = Store(postgres_url)
    upgrade(store)
    yield _seeded(store)
    store.close()


def test_a_writer_frozen_mid_write_holds_no_lock(pg_store: Store) -> None:
    """A verifier instance stopped (SIGSTOP, a paused VM) right after its compact write wrote
    the node's row holds no lock on it: the write was one statement, committed by itself. In a
    pipeline the row stayed locked as long as the process stayed stopped, since the server
    waits for the rest of the pipeline with no timeout at all."""
    from verifier.store.models import Attestation

    with pg_store.write() as db:
        node_id = db.scalars(select(Node.id)).one()
        db.add(Attestation(id=7, node_id=node_id, **_attestation_fields()))
    url = str(pg_store.engine.url.render_as_string(hide_password=False))
    root = Path(__file__).resolve().parent.parent
    writer = subprocess.Popen(
        [sys.executable, "-c", FROZEN_WRITER, url],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "frozen"
        plain = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, autocommit=True) as other:
            other.execute("SET lock_timeout = '1s'")  # a held lock fails this, not hangs it
            with other.transaction():
                locked = other.execute(
                    "SELECT last_clock FROM nodes WHERE name = 'n1' FOR UPDATE"
                ).fetchone()
            states = other.execute(
                "SELECT state FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchall()
            count = other.execute("SELECT count FROM attestation_repeats").fetchone()
        assert locked == (12345679999,)  # the frozen write's own, committed
        assert count == (1,)
        assert states and {s for (s,) in states} == {"idle"}, states
    finally:
        writer.send_signal(signal.SIGCONT)
        assert writer.wait(timeout=30) == 0


def test_a_challenge_reads_the_golden_version_and_the_node_in_one_statement(store: Store) -> None:
    """One row whether or not the node exists: the version, and the node's columns or NULLs."""
    with store.raw_read() as raw:
        assert hotpath.version_and_snapshot(raw, "nobody") == (0, None)
    with store.write() as db:
        hotpath.bump_version(db)
        hotpath.bump_version(db)
    with store.raw_read() as raw:
        version, snap = hotpath.version_and_snapshot(raw, "n1")
        alone = hotpath.node_snapshot(raw, "n1")
        assert hotpath.version_and_snapshot(raw, "nobody") == (2, None)
        assert hotpath.version_and_snapshot(raw, "n1%") == (2, None)  # not a pattern
    assert version == 2 and snap == alone and snap is not None
    assert snap.labels == {"pool": "web", "zone": "é"} and snap.state is NodeState.TRUSTED
    with store.write() as db:
        by_id = hotpath.node_snapshot_by_id(db, snap.id, for_update=True)
        assert hotpath.node_snapshot_by_id(db, snap.id + 1000, for_update=True) is None
    assert by_id == snap


def test_a_full_record_uses_its_nonce_and_locks_the_node_at_once(store: Store) -> None:
    """``use_nonce_and_lock``: one statement on PostgreSQL, whose lock holds until the
    transaction ends; a used nonce is reported, a deleted node is None, on both databases."""
    with store.read() as db:
        node_id = db.scalars(select(Node.id)).one()
    with store.write() as db:
        locked = hotpath.use_nonce_and_lock(db, node_id, b"L" * 32, T0, T0)
        node, fresh = locked.node, locked.nonce_fresh
        assert fresh and node is not None and node.name == "n1" and locked.golden_version == 0
        assert node.labels == {"pool": "web", "zone": "é"} and node.last_clock == 12345678901
        if not store.is_sqlite:  # another session cannot take the row meanwhile
            plain = store.engine.url.render_as_string(hide_password=False)
            with (
                psycopg.connect(plain.replace("+psycopg", ""), autocommit=True) as other,
                pytest.raises(psycopg.errors.LockNotAvailable),
            ):
                other.execute("SELECT 1 FROM nodes WHERE id = %s FOR UPDATE NOWAIT", [node_id])
    with pytest.raises(RuntimeError), store.write() as db:
        again = hotpath.use_nonce_and_lock(db, node_id, b"L" * 32, T0, T0)
        assert again.node == node and again.nonce_fresh is False
        raise RuntimeError("refused: rolled back")
    with store.write() as db:
        gone = hotpath.use_nonce_and_lock(db, node_id + 1000, b"M" * 32, T0, T0)
        assert (gone.node, gone.nonce_fresh) == (None, False)
    assert b"L" * 32 in _nonces(store)


def test_a_datetime_bound_again_is_converted_once_and_only_the_same_object(store: Store) -> None:
    from sqlalchemy import LargeBinary
    from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

    from verifier.store import prepared as prep
    from verifier.store.models import UtcDateTime

    calls: list[Any] = []

    def convert(v: Any) -> str:
        calls.append(v)
        return f"text {v}"

    remember = prep._LastDatetime(convert)
    now, equal = T0, T0 + dt.timedelta(0)
    assert remember(now) == remember(now) == f"text {T0}" and calls == [now]
    assert remember(equal) == f"text {T0}" and len(calls) == 2  # equal, not the same object
    assert remember(None) == remember(None) == "text None" and len(calls) == 4  # not kept
    dialect = sqlite_dialect()  # its own: the store's keeps its real processors
    shared = [prep._remembering(UtcDateTime(), dialect, convert) for _ in range(2)]
    assert shared[0] is shared[1] and isinstance(shared[0], prep._LastDatetime)
    assert prep._remembering(LargeBinary(), dialect, convert) is convert
    naive = T0.replace(tzinfo=None)
    for _ in range(2):  # refused every time (a conversion that raised is not kept)
        with pytest.raises(ValueError, match="naive datetime"), store.write() as db:
            hotpath.use_nonce(db, 1, b"y" * 32, naive, T0)
