"""Opening the database: SQLite (WAL, busy timeout, immediate write transactions) or PostgreSQL.

SQLite with several gunicorn workers: WAL lets readers run beside one writer, ``busy_timeout``
makes a writer wait for the lock instead of failing, and write transactions start with
``BEGIN IMMEDIATE`` so two workers never both hold a read lock and then deadlock upgrading it
(the cause of "database is locked" that a busy timeout cannot cure).

A locked or unreachable database is never waited on for long: a write transaction waits at most
``lock_timeout`` seconds for SQLite's write lock (short C-level waits, retried with ``time.sleep``,
which gevent makes cooperative, so other requests of the worker run meanwhile); PostgreSQL gets a
connect timeout, a lock timeout and a pool timeout of the same order. Whatever the database then
raises is re-raised as ``StoreUnavailable`` (busy or down), which the API answers with 503.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import PoolProxiedConnection

from assay.errors import AssayError, ConfigurationError

from .prepared import Raw

SQLITE_BUSY_TIMEOUT_MS = 50
"""One C-level wait for a SQLite lock; it blocks the whole (gevent) worker, so it is short."""
LOCK_TIMEOUT = 3.0
"""Seconds a transaction waits for a lock, or a request for a connection, before 503."""
STATEMENT_TIMEOUT = 10.0
"""PostgreSQL: seconds one statement may run before the server cancels it."""
IDLE_IN_TRANSACTION_TIMEOUT = 10.0
"""PostgreSQL: seconds a session may sit idle inside a transaction (a frozen or partitioned
instance) before the server ends it, releasing its locks for the other instances."""
PING_IDLE_AFTER = 1.0
"""PostgreSQL: seconds a pooled connection may sit unused before it is pinged at checkout. A
connection in steady use is not pinged (two round trips per re-attestation otherwise): if the
database restarted under it, its next statement fails (503), which invalidates the whole pool;
one that sat idle, perhaps across a restart, is pinged and replaced before a request uses it."""
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
"""TCP keepalives on every PostgreSQL connection, on both ends: a dead peer is noticed within
~11 s. The server's end matters for an instance that vanished (a paused VM, a partition): its
sessions are ended then, not after the operating system's default of two hours."""


def _pg_options(lock: float, statement: float, idle: float) -> str:
    ms = [int(x * 1000) for x in (lock, statement, idle)]
    server_keepalive = " ".join(
        f"-c tcp_{name}={KEEPALIVE[name]}"
        for name in ("keepalives_idle", "keepalives_interval", "keepalives_count")
    )
    return (
        f"-c lock_timeout={ms[0]} -c statement_timeout={ms[1]}"
        f" -c idle_in_transaction_session_timeout={ms[2]} {server_keepalive}"
    )


class StoreUnavailable(AssayError):
    """The database is locked past ``lock_timeout`` (``busy``) or cannot be reached."""

    def __init__(self, message: str, *, busy: bool) -> None:
        super().__init__(message)
        self.busy = busy


def _is_busy(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return (
        "locked" in text or "busy" in text or "lock timeout" in text or "statement timeout" in text
    )


def database_url(value: str) -> str:
    """Accept a SQLAlchemy URL or a bare file path (taken as a SQLite file)."""
    if "://" not in value:
        return f"sqlite:///{Path(value).expanduser().resolve()}"
    if value.startswith("postgresql://") or value.startswith("postgres://"):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    return value


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # transactions are begun explicitly below
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    """BEGIN, retrying a locked database with a (cooperative) sleep up to the lock timeout."""
    options = conn.get_execution_options()
    # No statement machinery: this runs per transaction.
    begin_sqlite(
        conn.connection.driver_connection,
        options.get("sqlite_begin", "DEFERRED"),
        options.get("lock_timeout", LOCK_TIMEOUT),
    )


def begin_sqlite(dbapi: Any, mode: str, lock_timeout: float) -> None:
    """``BEGIN mode`` on a sqlite3 connection, retrying a locked database with a (cooperative)
    sleep for up to ``lock_timeout`` seconds; then SQLAlchemy's OperationalError.

    A write transaction (IMMEDIATE) that finds another process writing does not wait in
    SQLite's busy handler, which sleeps in C and so stops every request of a gevent worker (two
    workers sharing a database each spent some 7% of their time there): it fails at once and
    sleeps here, where gevent runs the worker's other requests meanwhile."""
    deadline = time.monotonic() + lock_timeout
    begin = f"BEGIN {mode}"
    immediate = mode == "IMMEDIATE"
    pause = 0.0005 if immediate else 0.005
    if immediate:
        dbapi.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                dbapi.execute(begin)
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + pause > deadline:
                    raise sa_exc.OperationalError(begin, (), exc) from exc
            time.sleep(pause)
            pause = min(pause * 2, 0.1 if not immediate else 0.02)
    finally:
        if immediate:
            dbapi.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


def _stamp_checkin(_dbapi: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _pinger(dialect: Any, after: float) -> Any:
    """A pool ``checkout`` listener: ping a connection idle for ``after`` seconds or more; a lost
    one is replaced (with every older connection of the pool) before it is handed out."""

    def ping_if_idle(dbapi: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")  # ``info`` is emptied with a new connection
        if since is None or time.monotonic() - since < after:
            return
        try:
            dialect.do_ping(dbapi)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi, None):
                raise sa_exc.InvalidatePoolError(str(exc).splitlines()[0][:120]) from exc
            raise

    return ping_if_idle


def make_engine(
    url: str,
    lock_timeout: float = LOCK_TIMEOUT,
    statement_timeout: float = STATEMENT_TIMEOUT,
    idle_timeout: float = IDLE_IN_TRANSACTION_TIMEOUT,
    ping_idle_after: float = PING_IDLE_AFTER,
) -> Engine:
    """An engine whose every wait is bounded (lock, statement, idle transaction, connect, pool,
    a dead TCP peer), so one stuck instance or a database outage cannot stall the others."""
    try:
        parsed = make_url(database_url(url))
    except ArgumentError as exc:
        raise ConfigurationError(f"database URL {url!r} is not valid: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        # A pool keeps connections open: closing the last one checkpoints the WAL (slow).
        engine = create_engine(
            parsed,
            pool_size=5,
            max_overflow=10,
            pool_timeout=lock_timeout,
            execution_options={"lock_timeout": lock_timeout},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(
            parsed,
            pool_size=5,
            max_overflow=5,
            pool_timeout=lock_timeout,
            connect_args={
                "connect_timeout": max(1, round(lock_timeout)),
                "options": _pg_options(lock_timeout, statement_timeout, idle_timeout),
                **KEEPALIVE,
                "tcp_user_timeout": int(statement_timeout * 1000),
            },
        )
        event.listen(engine.pool, "checkin", _stamp_checkin)
        event.listen(engine.pool, "checkout", _pinger(engine.dialect, ping_idle_after))
        return engine
    backend = parsed.get_backend_name()
    raise ConfigurationError(f"unsupported database {backend!r} (sqlite, postgresql)")


@contextlib.contextmanager
def _unavailable_as_domain_error() -> Iterator[None]:
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.PendingRollbackError) as exc:
        busy = _is_busy(exc)
        what = "locked by another connection" if busy else "unreachable"
        first = (str(getattr(exc, "orig", exc)).splitlines() or [""])[0][:120]
        raise StoreUnavailable(f"the database is {what}: {first}", busy=busy) from None
    except sa_exc.TimeoutError:
        raise StoreUnavailable("no database connection free in time", busy=True) from None


class Store:
    """The database handle one app (or CLI run) uses: ``read()`` and ``write()`` sessions."""

    def __init__(
        self,
        url: str,
        *,
        lock_timeout: float = LOCK_TIMEOUT,
        statement_timeout: float = STATEMENT_TIMEOUT,
        idle_timeout: float = IDLE_IN_TRANSACTION_TIMEOUT,
        ping_idle_after: float = PING_IDLE_AFTER,
    ) -> None:
        self.url = database_url(url)
        self.engine = make_engine(
            self.url, lock_timeout, statement_timeout, idle_timeout, ping_idle_after
        )
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.lock_timeout = lock_timeout
        # SQLite has one writer at a time: the requests of one process queue for it here, in
        # order and without a connection, instead of all polling the file lock (under load the
        # unluckiest then waited past the lock timeout: "database is locked").
        self._writer = threading.Lock() if self.is_sqlite else None
        writer = self.engine
        if self.is_sqlite:
            writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(writer, expire_on_commit=False)
        # PostgreSQL runs each statement of such a read in its own transaction anyway (READ
        # COMMITTED), so its BEGIN and ROLLBACK are two round trips that change nothing.
        apart = self.engine
        if not self.is_sqlite:
            apart = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read_apart = sessionmaker(apart, expire_on_commit=False)

    @contextlib.contextmanager
    def read(self, *, statements_apart: bool = False) -> Iterator[Session]:
        """A read session. ``statements_apart``: the caller needs no statement to see the same
        snapshot as another (each is consistent by itself), so PostgreSQL runs them without
        BEGIN/ROLLBACK (the attestation hot path's reads); SQLite still reads one snapshot."""
        maker = self._read_apart if statements_apart else self._read
        with _unavailable_as_domain_error(), maker() as session:
            yield session  # close() ends the transaction; objects stay loaded

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends normally, rolled back otherwise."""
        with (
            self._one_writer(),
            _unavailable_as_domain_error(),
            self._write() as session,
            session.begin(),
        ):
            yield session

    @contextlib.contextmanager
    def raw_read(self) -> Iterator[Raw]:
        """Statements that each stand alone (as ``read(statements_apart=True)``) on a pooled
        connection without a Session: each is its own snapshot, on SQLite too. For the
        prepared statements of an attestation's read (``verifier.store.prepared``)."""
        with _unavailable_as_domain_error(), self._autocommit(None) as raw:
            yield raw

    @contextlib.contextmanager
    def raw_write(self) -> Iterator[Raw]:
        """A write on a pooled connection without a Session (an unchanged re-attestation's),
        with the same lock waits and errors as ``write()``.

        On SQLite, one transaction (``BEGIN IMMEDIATE`` … ``COMMIT``) of any statements,
        committed when the block ends normally and rolled back otherwise. On PostgreSQL, exactly
        one statement (a second is refused), in autocommit: it commits itself, so it must write
        only what the caller keeps, and no transaction is ever open between two messages of this
        client — one frozen mid-write (SIGSTOP, a paused VM) holds no lock."""
        with self._one_writer(), _unavailable_as_domain_error():
            if not self.is_sqlite:
                with self._autocommit(1) as raw:
                    yield raw
                return
            fairy = self._checkout()
            raw = Raw(fairy, self.engine.dialect, self.engine.pool)
            try:
                begin_sqlite(raw.dbapi, "IMMEDIATE", self.lock_timeout)
                try:
                    yield raw
                except BaseException:
                    with contextlib.suppress(Exception):  # a lost connection is invalidated
                        raw.call("ROLLBACK", raw.dbapi.rollback)
                    raise
                raw.call("COMMIT", raw.dbapi.commit)
            finally:
                fairy.close()

    @contextlib.contextmanager
    def _autocommit(self, statements_left: int | None) -> Iterator[Raw]:
        """A pooled connection in autocommit (SQLite's always are), back to the pool as it was."""
        fairy = self._checkout()
        raw = Raw(fairy, self.engine.dialect, self.engine.pool, statements_left)
        try:
            if not self.is_sqlite:
                raw.call("autocommit", lambda: setattr(raw.dbapi, "autocommit", True))
            yield raw
        finally:
            if not self.is_sqlite and not raw.dbapi.closed:
                raw.dbapi.autocommit = False
            fairy.close()

    def _checkout(self) -> PoolProxiedConnection:
        """A pooled connection; a driver error connecting is SQLAlchemy's, as ``connect()``
        raises it (the pool alone raises the driver's own)."""
        dialect = self.engine.dialect
        try:
            return self.engine.raw_connection()
        except dialect.loaded_dbapi.Error as exc:
            raise sa_exc.DBAPIError.instance(
                None, None, exc, dialect.loaded_dbapi.Error, dialect=dialect
            ) from exc

    @contextlib.contextmanager
    def _one_writer(self) -> Iterator[None]:
        """On SQLite, this process's writers one at a time (FIFO; cooperative under gevent),
        waiting at most the lock timeout; nothing on PostgreSQL (row locks, not a file lock)."""
        lock = self._writer
        if lock is None:
            yield
            return
        if not lock.acquire(timeout=self.lock_timeout):
            raise StoreUnavailable("the database is locked by this process's writers", busy=True)
        try:
            yield
        finally:
            lock.release()

    def close(self) -> None:
        self.engine.dispose()
