"""The hot path's statements, run on the DBAPI cursor of the session's connection, or of a
pooled DBAPI connection used without a Session at all (``Raw``: ``Store.raw_read()`` and
``Store.raw_write()``, for an unchanged re-attestation's read and write).

SQLAlchemy still writes every statement (compiled once per dialect) and still converts every
value, with the columns' own bind and result processors (``dialect_impl``); what is skipped is
the per-call machinery around them — compile-cache lookup, execution context, result objects,
events — which cost five to ten times the statement itself on an unchanged re-attestation.

Errors are SQLAlchemy's: a DBAPI error is re-raised as the ``DBAPIError`` subclass SQLAlchemy
would raise (``OperationalError`` for a locked or lost database, ``IntegrityError`` …), and a
connection the dialect calls disconnected is invalidated, as SQLAlchemy's own execution does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool, PoolProxiedConnection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import DateTime, TypeDecorator

Processor = Callable[[Any], Any]
_MISSING = object()


class Raw:
    """A pooled DBAPI connection used directly: no Session, no Core ``Connection``, no
    transaction objects — what they cost was a quarter of an unchanged re-attestation. The
    ``Store`` that hands it out owns its transaction and its return to the pool."""

    __slots__ = ("_fairy", "_pool", "dbapi", "dialect", "statements_left")

    def __init__(
        self,
        fairy: PoolProxiedConnection,
        dialect: Dialect,
        pool: Pool,
        statements_left: int | None = None,
    ) -> None:
        self._fairy = fairy
        self._pool = pool
        self.dialect = dialect
        self.dbapi: Any = fairy.driver_connection
        self.statements_left = statements_left
        """None, or how many more statements this connection may run (``Store.raw_write`` on
        PostgreSQL: one, its own transaction)."""

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` (a DBAPI call, e.g. commit), its errors SQLAlchemy's as in ``Prepared.run``."""
        try:
            return fn()
        except self.dialect.loaded_dbapi.Error as exc:
            raise self.wrapped(what, (), exc, None) from exc

    def wrapped(self, sql: str, args: Any, exc: Any, cursor: Any) -> sa_exc.StatementError:
        """``exc`` (a DBAPI error) as SQLAlchemy raises it. A lost connection is invalidated,
        and with it every connection of the pool opened before it (what SQLAlchemy's own
        execution does on a disconnect: the database restarted, so they are all gone)."""
        gone = self.dialect.is_disconnect(exc, self.dbapi, cursor)
        if gone:
            self._pool._invalidate(self._fairy, exc)  # the fairy too
        err: sa_exc.StatementError = sa_exc.DBAPIError.instance(
            sql, args, exc, self.dialect.loaded_dbapi.Error,
            connection_invalidated=gone, dialect=self.dialect,
        )  # fmt: skip
        return err


Db = Session | Raw
"""Where a prepared statement runs: a Session's transaction, or a ``Raw`` connection."""


def dialect_of(s: Db) -> Dialect:
    return s.dialect if isinstance(s, Raw) else s.get_bind().dialect


class _LastDatetime:
    """A datetime column's bind processor that remembers its last answer: a round binds the
    same ``now`` object to four columns of three statements, and converting it (UTC, naive,
    then the driver's text on SQLite) was some 4% of an unchanged re-attestation's CPU. Only
    for the very same object (``is``; a datetime is immutable); one per type and dialect, so
    equal types share it. Its last pair is one attribute, replaced whole."""

    __slots__ = ("last", "proc")

    def __init__(self, proc: Processor) -> None:
        self.proc = proc
        self.last: tuple[Any, Any] = (_MISSING, None)

    def __call__(self, value: Any) -> Any:
        seen, out = self.last
        if value is seen:
            return out
        out = self.proc(value)
        if isinstance(value, dt.datetime):
            self.last = (value, out)
        return out


_DATETIME_BINDERS: dict[tuple[int, str], tuple[Dialect, _LastDatetime]] = {}
"""By dialect (held, so its id is not reused) and type."""


def _remembering(type_: Any, dialect: Dialect, proc: Processor) -> Processor:
    impl = type_.impl_instance if isinstance(type_, TypeDecorator) else type_
    if not isinstance(impl, DateTime):
        return proc
    key = (id(dialect), repr(type_))
    known = _DATETIME_BINDERS.get(key)
    if known is None:
        known = _DATETIME_BINDERS[key] = (dialect, _LastDatetime(proc))
    return known[1]


class Prepared:
    """One statement compiled for one dialect: its SQL, parameter order, literal values and the
    bind processors of its parameters; result processors are taken from the first execution's
    cursor description (they may depend on the driver's column types)."""

    __slots__ = ("binders", "columns", "defaults", "dialect", "names", "results", "sql")

    def __init__(self, stmt: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, stmt.compile(dialect=dialect))
        if compiled.insert_prefetch or compiled.update_prefetch:
            # Python-side column defaults are computed by SQLAlchemy's execution context.
            raise TypeError("a statement with Python-side column defaults cannot be prepared")
        self.dialect = dialect
        self.sql = compiled.string
        positions = compiled.positiontup
        self.names: tuple[str, ...] | None = None if positions is None else tuple(positions)
        self.defaults = {n: b.value for n, b in compiled.binds.items() if not b.required}
        self.binders: dict[str, Processor] = {}
        for name, bind in compiled.binds.items():
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                self.binders[name] = _remembering(bind.type, dialect, proc)
        self.columns = tuple(getattr(stmt, "selected_columns", None) or stmt.exported_columns)  # type: ignore[attr-defined]
        self.results: tuple[Processor | None, ...] | None = None

    def _args(self, params: Mapping[str, Any]) -> Any:
        if self.names is not None:  # positional (SQLite): one pass in parameter order
            get, defaults, binders = params.get, self.defaults, self.binders
            out = []
            for n in self.names:
                v = get(n, _MISSING)
                if v is _MISSING:
                    v = defaults[n]
                proc = binders.get(n)
                out.append(v if proc is None else proc(v))
            return tuple(out)
        values = {**self.defaults, **params}
        for name, proc in self.binders.items():
            if name in values:
                values[name] = proc(values[name])
        return values

    def _processors(self, description: Any) -> tuple[Processor | None, ...]:
        d = self.dialect
        self.results = tuple(
            col.type.dialect_impl(d).result_processor(d, desc[1])
            for col, desc in zip(self.columns, description, strict=True)
        )
        return self.results

    def run(self, s: Db, params: Mapping[str, Any]) -> Any:
        """Execute in ``s``'s transaction; the DBAPI cursor (the caller fetches and closes)."""
        if isinstance(s, Raw):
            dbapi = s.dbapi
            if s.statements_left is not None:
                if s.statements_left <= 0:
                    raise RuntimeError("this write is one statement (its own transaction)")
                s.statements_left -= 1
        else:
            conn = s.connection()
            dbapi = conn.connection.driver_connection
        cursor = dbapi.cursor()
        args = self._args(params)
        try:
            cursor.execute(self.sql, args)
        except self.dialect.loaded_dbapi.Error as exc:
            cursor.close()
            if isinstance(s, Raw):
                raise s.wrapped(self.sql, args, exc, cursor) from exc
            gone = self.dialect.is_disconnect(exc, dbapi, cursor)
            if gone:  # as ``Raw.wrapped``: the pool's older connections too
                conn.engine.pool._invalidate(conn.connection, exc, _checkin=False)
                conn.invalidate(exc)
            raise sa_exc.DBAPIError.instance(
                self.sql, args, exc, self.dialect.loaded_dbapi.Error,
                connection_invalidated=gone, dialect=self.dialect,
            ) from exc  # fmt: skip
        return cursor

    def first(self, s: Db, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row, converted as SQLAlchemy converts it; None when there is none."""
        row: tuple[Any, ...] | None = self.result(self.run(s, params), "first")
        return row

    def rowcount(self, s: Db, params: Mapping[str, Any]) -> int:
        """Rows the statement changed (UPDATE, DELETE)."""
        count: int = self.result(self.run(s, params), "rowcount")
        return count

    def result(self, cursor: Any, want: str) -> Any:
        """What ``first`` (``want="first"``) or ``rowcount`` answers, from an executed cursor."""
        try:
            if want == "rowcount":
                return int(cursor.rowcount)
            row = cursor.fetchone()
            if row is None:
                return None
            procs = self.results or self._processors(cursor.description)
        finally:
            cursor.close()
        return tuple(v if p is None else p(v) for p, v in zip(procs, row, strict=True))


Step = tuple[Prepared, Mapping[str, Any], str]
"""A statement, its parameters, and ``"first"`` or ``"rowcount"``: what to answer."""


def run_step(s: Db, step: Step) -> Any:
    """A step's answer, run in ``s``'s transaction.

    Never in a PostgreSQL pipeline: psycopg sends each statement of a pipeline as it is queued,
    and the Sync only at its end, so a client frozen between the two (SIGSTOP, a paused VM)
    leaves its session "active" in ``ClientRead`` holding every lock taken so far, which no
    server timeout ends (``idle_in_transaction_session_timeout`` starts only after a Sync).
    Several writes that must go in one round trip go in one statement instead
    (``hotpath.count_repeat``)."""
    p, params, want = step
    return p.result(p.run(s, params), want)


_MADE: dict[tuple[int, str], tuple[ClauseElement, Prepared]] = {}


def prepared(s: Db, stmt: ClauseElement) -> Prepared:
    """``stmt`` (a module-level statement, built once) prepared for ``s``'s dialect."""
    dialect = dialect_of(s)
    key = (id(stmt), dialect.name)
    made = _MADE.get(key)
    if made is None or made[0] is not stmt:
        made = _MADE[key] = (stmt, Prepared(stmt, dialect))
    return made[1]
