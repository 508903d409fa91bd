"""The attestation hot path in SQLAlchemy Core: one read of the node, then one write transaction.

No ORM objects are loaded or flushed here: each function is one statement on the session's
connection (``Session.connection()``), so an attestation costs a handful of compiled, cached
statements. The caller owns the transaction (``Store.read()`` / ``Store.write()``). The
statements of an unchanged re-attestation (its read, the nonce, the refresh, the count) also run
on a ``Raw`` connection without a Session (``Store.raw_read()`` / ``Store.raw_write()``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, literal_column, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .models import (
    Attestation,
    AttestationRepeat,
    Node,
    NodeState,
    Nonce,
    StoreVersion,
    VerdictBlob,
)
from .prepared import Db, Step, dialect_of, prepared, run_step

NODES = cast(Table, Node.__table__)
ATTESTATIONS = cast(Table, Attestation.__table__)
REPEATS = cast(Table, AttestationRepeat.__table__)
NONCES = cast(Table, Nonce.__table__)
VERDICTS = cast(Table, VerdictBlob.__table__)
VERSIONS = cast(Table, StoreVersion.__table__)
N = NODES.c
A = ATTESTATIONS.c
R = REPEATS.c
GOLDEN_VERSION = "golden"


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """What the hot path needs of a node, as read at one moment (never written back as such)."""

    id: int
    name: str
    ak_public: bytes
    labels: Mapping[str, str]
    state: NodeState
    state_since: dt.datetime
    reason: str
    last_attestation_id: int | None
    last_success_at: dt.datetime | None
    last_reset_count: int | None
    last_restart_count: int | None
    boot_log_sha256: str | None
    golden_versions: list[str]
    verdict_key: str | None
    last_clock: int | None
    last_verdict_sha256: str | None
    enrolled_at: dt.datetime
    row_version: int
    """The row's version when read (``Node.row_version``): a write that relies on this snapshot
    is made only where the row still has it."""


_SNAPSHOT_COLUMNS = (
    N.id,
    N.name,
    N.ak_public,
    N.labels,
    N.state,
    N.state_since,
    N.reason,
    N.last_attestation_id,
    N.last_success_at,
    N.last_reset_count,
    N.last_restart_count,
    N.boot_log_sha256,
    N.golden_versions,
    N.verdict_key,
    N.last_clock,
    A.verdict_sha256.label("last_verdict_sha256"),
    N.enrolled_at,
    N.row_version,
)


def _dialect_insert(s: Session, table: Table) -> Any:
    """An INSERT with ``on_conflict_do_*`` (both dialects spell it the same way)."""
    maker = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    return maker(table)


def _snapshot_where(where: Any, for_update: bool) -> Any:
    q = (
        select(*_SNAPSHOT_COLUMNS)
        .select_from(NODES.outerjoin(ATTESTATIONS, A.id == N.last_attestation_id))
        .where(where)
    )
    return q.with_for_update(of=NODES) if for_update else q


def _by_name(for_update: bool) -> Any:
    return _snapshot_where(N.name == bindparam("name"), for_update)


_GOLDEN_VERSION = (
    select(VERSIONS.c.value).where(VERSIONS.c.name == GOLDEN_VERSION).scalar_subquery()
)
_NONCE_USED = select(NONCES.c.id).where(NONCES.c.nonce == bindparam("nonce")).exists()
# Built once: a statement object built per call costs more than executing it.
_SNAPSHOT = _by_name(False)
_SNAPSHOT_LOCKED = _by_name(True)
_SNAPSHOT_BY_ID = _snapshot_where(N.id == bindparam("id"), False)
_SNAPSHOT_BY_ID_LOCKED = _snapshot_where(N.id == bindparam("id"), True)
_READ = _by_name(False).add_columns(
    _GOLDEN_VERSION.label("golden_version"), _NONCE_USED.label("nonce_used")
)
_VERSION_NOW = select(_GOLDEN_VERSION)
# The golden version, and the node's columns beside it (all NULL when there is no such node).
_ONE = select(_GOLDEN_VERSION.label("golden_version")).subquery("golden")
_VERSION_AND_SNAPSHOT = select(_ONE.c.golden_version, *_SNAPSHOT_COLUMNS).select_from(
    _ONE.outerjoin(
        NODES.outerjoin(ATTESTATIONS, A.id == N.last_attestation_id),
        N.name == bindparam("name"),
    )
)


@dataclass(frozen=True, slots=True)
class AttestationRead:
    """Step 2 of an attestation in one statement: the node, the golden version, the nonce."""

    node: NodeSnapshot
    golden_version: int
    nonce_used: bool


def read_for_attestation(s: Db, name: str, nonce: bytes) -> AttestationRead | None:
    """The node named ``name``, the store's golden version and whether ``nonce`` was used."""
    row = prepared(s, _READ).first(s, {"name": name, "nonce": nonce})
    if row is None:
        return None
    *values, version, used = row
    return AttestationRead(NodeSnapshot(*values), int(version or 0), bool(used))


def node_snapshot(s: Db, name: str, *, for_update: bool = False) -> NodeSnapshot | None:
    """The node named ``name`` with its last attestation's verdict digest (one statement).

    ``for_update`` locks the row until the transaction ends (PostgreSQL; SQLite's write
    transaction already holds the database lock)."""
    row = prepared(s, _SNAPSHOT_LOCKED if for_update else _SNAPSHOT).first(s, {"name": name})
    return None if row is None else NodeSnapshot(*row)


def node_snapshot_by_id(
    s: Session, node_id: int, *, for_update: bool = False
) -> NodeSnapshot | None:
    """The node ``node_id``, as ``node_snapshot`` (one statement)."""
    stmt = _SNAPSHOT_BY_ID_LOCKED if for_update else _SNAPSHOT_BY_ID
    row = prepared(s, stmt).first(s, {"id": node_id})
    return None if row is None else NodeSnapshot(*row)


def version_and_snapshot(s: Db, name: str) -> tuple[int, NodeSnapshot | None]:
    """``golden_version`` and ``node_snapshot(name)`` in one statement (a challenge's read)."""
    row = prepared(s, _VERSION_AND_SNAPSHOT).first(s, {"name": name})
    assert row is not None  # one row always: the version's
    version, *values = row
    return int(version or 0), None if values[0] is None else NodeSnapshot(*values)


def golden_version(s: Db) -> int:
    """The counter bumped with every golden-set change (0 before the first)."""
    row = prepared(s, _VERSION_NOW).first(s, {})
    return int(row[0] or 0) if row is not None else 0


def bump_version(s: Session, name: str = GOLDEN_VERSION) -> None:
    """Increment ``name`` in the caller's transaction: every instance's cache of it is stale."""
    stmt = _dialect_insert(s, VERSIONS).values(name=name, value=1)
    stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={"value": VERSIONS.c.value + 1})
    s.connection().execute(stmt)


class _Upserts:
    """The hot path's INSERT … ON CONFLICT statements for one dialect, built once (and, on
    PostgreSQL, the compact write of ``count_repeat`` as one statement)."""

    def __init__(self, dialect: str) -> None:
        maker: Any = pg_insert if dialect == "postgresql" else sqlite_insert
        self.nonce = (
            maker(NONCES)
            .values({c: bindparam(c) for c in ("node_id", "nonce", "created_at", "expires_at")})
            .values(used_at=bindparam("created_at"))
            .on_conflict_do_nothing()
            .returning(NONCES.c.id)
        )
        last: dict[str, Any] = {
            c: bindparam(c) for c in ("last_at", "last_nonce", "last_quote", "last_signature")
        }
        repeat = maker(REPEATS).values(
            attestation_id=bindparam("attestation_id"),
            count=1,
            first_at=bindparam("last_at"),
            **last,
        )
        self.repeat = repeat.on_conflict_do_update(
            index_elements=["attestation_id"], set_={"count": R.count + 1, **last}
        ).returning(R.count)
        self.repeat_once = _repeat_once() if dialect == "postgresql" else None
        self.nonce_and_lock = _nonce_and_lock() if dialect == "postgresql" else None


def _nonce_from(node_id: Any) -> Any:
    """PostgreSQL: the INSERT of a used nonce for the node ``node_id`` selects (a CTE's column:
    no row there, no nonce)."""
    typed = {c: bindparam(c, type_=NONCES.c[c].type) for c in ("nonce", "created_at", "expires_at")}
    return pg_insert(NONCES).from_select(
        ["node_id", "nonce", "created_at", "expires_at", "used_at"],
        select(node_id, typed["nonce"], typed["created_at"], typed["expires_at"],
               typed["created_at"]),
    )  # fmt: skip


def _nonce_and_lock() -> Any:
    """PostgreSQL: the node locked, its nonce used and its snapshot, in one statement (a full
    record's first two): (the node's columns, 1 if the nonce went in else 0, the golden
    version); no row when the node is gone. The nonce is inserted from the locked row, so a node deleted meanwhile gets no
    nonce (no foreign-key violation) and a node being deleted is waited for, then found gone."""
    locked = select(N.id).where(N.id == bindparam("node_id")).with_for_update().cte("locked")
    used = _nonce_from(locked.c.id).on_conflict_do_nothing().returning(NONCES.c.id).cte("used")
    fresh = select(func.count()).select_from(used).scalar_subquery()
    locked_row = _snapshot_where(N.id == bindparam("node_id"), True)
    return locked_row.add_columns(fresh, _GOLDEN_VERSION).add_cte(used)


def _repeat_once() -> Any:
    """PostgreSQL: the refresh, the nonce and the count of an unchanged re-attestation in one
    statement (data-modifying CTEs: one snapshot, one transaction, all or nothing).

    The nonce and the count are inserted from the refresh's own rows, so when the node changed
    since it was read, nothing at all is written and the nonce is left for the full record. A
    nonce used already, or meanwhile by another instance, is a unique violation: the whole
    statement fails and nothing of it lands. Answers (rows refreshed, the new count)."""
    # Built anew: a copy of ``_REFRESH`` made after it was compiled keeps its memoized (empty)
    # RETURNING columns.
    refreshed = _refresh_statement().returning(N.id).cte("refreshed")
    used = _nonce_from(refreshed.c.id).cte("used")  # no ON CONFLICT: a used nonce fails it all
    last = ("last_at", "last_nonce", "last_quote", "last_signature")
    insert = pg_insert(REPEATS).from_select(
        ["attestation_id", "count", "first_at", *last],
        select(
            bindparam("attestation_id", type_=R.attestation_id.type),
            literal_column("1"),
            bindparam("last_at", type_=R.last_at.type),
            *(bindparam(c, type_=R[c].type) for c in last),
        ).select_from(refreshed),
    )
    counted = (
        insert.on_conflict_do_update(
            index_elements=["attestation_id"],
            set_={"count": R.count + 1, **{c: insert.excluded[c] for c in last}},
        )
        .returning(R.count)
        .cte("counted")
    )
    return select(
        select(func.count()).select_from(refreshed).scalar_subquery(),
        select(counted.c.count).scalar_subquery(),
    ).add_cte(used)


_UPSERTS: dict[str, _Upserts] = {}


def _upserts(s: Db) -> _Upserts:
    name = dialect_of(s).name
    made = _UPSERTS.get(name)
    if made is None:
        made = _UPSERTS[name] = _Upserts(name)
    return made


# --- nonces -----------------------------------------------------------------------------------


def nonce_used(s: Session, nonce: bytes) -> bool:
    """Whether ``nonce`` was used already (an early refusal; ``use_nonce`` is what decides)."""
    return bool(s.connection().execute(select(_NONCE_USED), {"nonce": nonce}).scalar())


def use_nonce(s: Db, node_id: int, nonce: bytes, now: dt.datetime, expires_at: dt.datetime) -> bool:
    """Record ``nonce`` as used until it expires; False if any instance used it first (the unique
    column decides, atomically). Expired rows are purged by the retention job, not here."""
    # RETURNING says whether a row went in (rowcount is -1 with psycopg's RETURNING).
    return run_step(s, _nonce_step(s, node_id, nonce, now, expires_at)) is not None


@dataclass(frozen=True, slots=True)
class Locked:
    """What ``use_nonce_and_lock`` found: the node (locked), the nonce and the golden version."""

    node: NodeSnapshot | None
    """None: the node was deleted."""
    nonce_fresh: bool
    """Meaningful only for a node."""
    golden_version: int


def use_nonce_and_lock(
    s: Session, node_id: int, nonce: bytes, now: dt.datetime, expires_at: dt.datetime
) -> Locked:
    """``node_snapshot_by_id(for_update=True)``, ``use_nonce`` and ``golden_version``: the node,
    locked until the transaction ends, whether the nonce was fresh, and the golden version the
    transaction sees. One statement on PostgreSQL, three on SQLite; the caller rolls back unless
    all are what it relied on."""
    once = _upserts(s).nonce_and_lock
    if once is None:  # SQLite: the write transaction holds the database, so nothing can move
        node = node_snapshot_by_id(s, node_id, for_update=True)
        fresh = node is not None and use_nonce(s, node_id, nonce, now, expires_at)
        return Locked(node, fresh, golden_version(s))
    row = prepared(s, once).first(s, _nonce_step(s, node_id, nonce, now, expires_at)[1])
    if row is None:
        return Locked(None, False, 0)
    *values, fresh, version = row
    return Locked(NodeSnapshot(*values), bool(fresh), int(version or 0))


def _nonce_step(
    s: Db, node_id: int, nonce: bytes, now: dt.datetime, expires_at: dt.datetime
) -> Step:
    params = {"node_id": node_id, "nonce": nonce, "created_at": now, "expires_at": expires_at}
    return prepared(s, _upserts(s).nonce), params, "first"


# --- verdicts ---------------------------------------------------------------------------------


def canonical_verdict(verdict: Mapping[str, Any]) -> tuple[str, bytes]:
    """(SHA-256 hex, canonical JSON bytes) of a verdict document."""
    text = json.dumps(verdict, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # A lone surrogate (quoted from a log) as its JSON escape, which loads back as it was.
    data = text.encode("utf-8", "backslashreplace")
    return hashlib.sha256(data).hexdigest(), data


TOUCH_AFTER = dt.timedelta(minutes=10)
"""A verdict referred to again is touched (``created_at``) when older than this; the blob GC's
grace period is at least twice as long, so it never deletes a verdict being referred to."""


_VERDICT_CREATED = select(VERDICTS.c.created_at).where(VERDICTS.c.sha256 == bindparam("sha256"))


def put_verdict(s: Session, sha256_hex: str, canonical: bytes, now: dt.datetime) -> None:
    """Store a verdict once under its digest. An existing one is only read (no row lock, so a
    frozen transaction that wrote the same verdict cannot block this one), and touched when older
    than ``TOUCH_AFTER``, which keeps the blob GC off it."""
    row = prepared(s, _VERDICT_CREATED).first(s, {"sha256": sha256_hex})
    at = None if row is None else row[0]
    if at is None:
        data = compress_verdict(canonical)
        stmt = _dialect_insert(s, VERDICTS).values(sha256=sha256_hex, data=data, created_at=now)
        s.connection().execute(stmt.on_conflict_do_nothing())
    elif at < now - TOUCH_AFTER:
        s.connection().execute(
            update(VERDICTS).where(VERDICTS.c.sha256 == sha256_hex).values(created_at=now)
        )


def compress_verdict(canonical: bytes) -> bytes:
    """How ``verdicts.data`` holds a canonical verdict document."""
    return zlib.compress(canonical, 6)


def get_verdict(s: Session, sha256_hex: str) -> dict[str, Any] | None:
    q = select(VERDICTS.c.data).where(VERDICTS.c.sha256 == sha256_hex)
    data = s.connection().execute(q).scalar()
    if data is None:
        return None
    doc = json.loads(zlib.decompress(data))
    assert isinstance(doc, dict)
    return doc


def verdict_of(s: Session, row: Attestation) -> dict[str, Any]:
    """An attestation's verdict document: kept in the row (written before verdicts were shared)
    or in ``verdicts`` under its digest; ``{}`` when neither holds it."""
    if row.verdict is not None:
        return dict(row.verdict)
    if row.verdict_sha256 is None:
        return {}
    return get_verdict(s, row.verdict_sha256) or {}


# --- attestations and node state ---------------------------------------------------------------


_UPDATE_NODE = update(NODES).where(N.id == bindparam("b_node_id"))


_BY_COLUMNS: dict[tuple[str, tuple[str, ...]], Any] = {}


def _for_columns(kind: str, columns: tuple[str, ...]) -> Any:
    """The INSERT of an attestation or the UPDATE of a node setting ``columns``, built once per
    set of columns (so it can be prepared once)."""
    stmt = _BY_COLUMNS.get((kind, columns))
    if stmt is None:
        binds: dict[str, Any] = {c: bindparam(c) for c in columns}
        if kind == "insert":
            stmt = ATTESTATIONS.insert().values(binds).returning(A.id)
        else:
            stmt = _UPDATE_NODE.values(binds)
        stmt = _BY_COLUMNS[(kind, columns)] = stmt
    return stmt


def insert_attestation(s: Session, values: Mapping[str, Any]) -> int:
    """Insert one attestation row (the columns are the keys of ``values``); its id."""
    row = prepared(s, _for_columns("insert", tuple(values))).first(s, values)
    assert row is not None
    return int(row[0])


_INSERT_RETURNING = ATTESTATIONS.insert().returning(A.id, sort_by_parameter_order=True)


def insert_attestations(s: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert attestation rows (all with the same columns) in one INSERT … RETURNING (batched
    by SQLAlchemy's insertmanyvalues); their ids, in the order of ``rows``."""
    if len(rows) <= 1:
        return [insert_attestation(s, r) for r in rows]
    return [int(i) for (i,) in s.connection().execute(_INSERT_RETURNING, rows)]


def update_nodes(s: Session, updates: list[tuple[int, Mapping[str, Any]]]) -> None:
    """Set columns on several nodes: one executemany per set of column names."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for node_id, values in updates:
        groups.setdefault(tuple(sorted(values)), []).append({"b_node_id": node_id, **values})
    for params in groups.values():
        if len(params) == 1:  # one node (new evidence): the prepared statement
            update_node(s, params[0].pop("b_node_id"), params[0])
        else:
            s.connection().execute(_UPDATE_NODE, params)


def update_node(s: Session, node_id: int, values: Mapping[str, Any]) -> None:
    """Set the columns named by ``values`` on node ``node_id`` (one prepared UPDATE)."""
    prepared(s, _for_columns("update", tuple(values))).rowcount(s, {"b_node_id": node_id, **values})


def latest_evidence_ids(s: Session, node_ids: list[int]) -> dict[int, int]:
    """Each node's newest attestation from its own evidence (not a re-appraisal), by node id."""
    if not node_ids:
        return {}
    q = (
        select(A.node_id, func.max(A.id))
        .where(A.node_id.in_(node_ids), A.source == "evidence")
        .group_by(A.node_id)
    )
    return {int(n): int(i) for n, i in s.connection().execute(q)}


def _refresh_statement() -> Any:
    """The UPDATE of ``refresh_unchanged_node``: only if nothing that decided a verdict reuse
    changed since the snapshot — the row's version (every change of the node but this refresh
    bumps it), the golden version, and a TPM clock still behind this quote's; the columns the
    reuse compared are held too."""
    unchanged = update(NODES).where(
        N.id == bindparam("b_id"),
        N.row_version == bindparam("b_row_version"),
        N.last_clock < bindparam("last_clock"),
        func.coalesce(_GOLDEN_VERSION, 0) == bindparam("b_golden"),
        N.state == bindparam("b_state"),
        N.last_attestation_id == bindparam("b_last"),
        N.verdict_key == bindparam("b_key"),
        N.last_reset_count == bindparam("b_reset"),
        N.last_restart_count == bindparam("b_restart"),
    )
    return unchanged.values(
        last_attested_at=bindparam("last_attested_at"),
        last_success_at=bindparam("last_success_at"),
        last_clock=bindparam("last_clock"),
    )


_REFRESH = _refresh_statement()


def refresh_unchanged_node(
    s: Db, snap: NodeSnapshot, now: dt.datetime, clock: int, golden: int
) -> bool:
    """Mark the node freshly attested (trusted, at ``now``, TPM clock ``clock``) only if nothing
    that decided a verdict reuse changed since ``snap`` was read with golden version ``golden``
    (the row, the golden version, a later clock meanwhile); False if something did."""
    return bool(run_step(s, _refresh_step(s, snap, now, clock, golden)) == 1)


def _refresh_step(s: Db, snap: NodeSnapshot, now: dt.datetime, clock: int, golden: int) -> Step:
    params = {
        "b_id": snap.id, "b_row_version": snap.row_version, "b_golden": golden,
        "b_state": snap.state, "b_last": snap.last_attestation_id,
        "b_key": snap.verdict_key, "b_reset": snap.last_reset_count,
        "b_restart": snap.last_restart_count, "last_attested_at": now,
        "last_success_at": now, "last_clock": clock,
    }  # fmt: skip
    return prepared(s, _REFRESH), params, "rowcount"


def add_repeat(
    s: Db, attestation_id: int, now: dt.datetime, nonce: bytes, quote: bytes, signature: bytes
) -> int:
    """Count one more unchanged re-attestation of ``attestation_id`` (one row, updated in place);
    returns the new count."""
    return _count(run_step(s, _repeat_step(s, attestation_id, now, nonce, quote, signature)))


def _repeat_step(
    s: Db, attestation_id: int, now: dt.datetime, nonce: bytes, quote: bytes, signature: bytes
) -> Step:
    params = {
        "attestation_id": attestation_id, "last_at": now, "last_nonce": nonce,
        "last_quote": quote, "last_signature": signature,
    }  # fmt: skip
    return prepared(s, _upserts(s).repeat), params, "first"


def _count(row: tuple[Any, ...] | None) -> int:
    return int(row[0]) if row is not None and row[0] is not None else 0


@dataclass(frozen=True, slots=True)
class Repeat:
    """What the compact write of an unchanged re-attestation found (see ``count_repeat``)."""

    nonce_fresh: bool
    node_unchanged: bool
    count: int


def count_repeat(
    s: Db,
    snap: NodeSnapshot,
    now: dt.datetime,
    clock: int,
    nonce: bytes,
    nonce_expires: dt.datetime,
    quote: bytes,
    signature: bytes,
    golden: int,
) -> Repeat:
    """``refresh_unchanged_node``, ``use_nonce`` and ``add_repeat`` at once. On PostgreSQL, one
    statement (``Store.raw_write``), which writes nothing unless the node is unchanged and the
    nonce fresh. On SQLite, up to three statements, each only if the one before found what it
    should; the caller rolls the transaction back unless both did. A node changed or deleted
    since ``snap`` was read gets no nonce: the full record decides (a foreign-key violation,
    before)."""
    assert snap.last_attestation_id is not None
    once = _upserts(s).repeat_once
    if once is None:  # in order, each only if the one before found what it should
        if not refresh_unchanged_node(s, snap, now, clock, golden):  # changed, or deleted
            return Repeat(True, False, 0)
        if not use_nonce(s, snap.id, nonce, now, nonce_expires):
            return Repeat(False, True, 0)
        return Repeat(
            True, True, add_repeat(s, snap.last_attestation_id, now, nonce, quote, signature)
        )
    params = {
        **_refresh_step(s, snap, now, clock, golden)[1],
        **_repeat_step(s, snap.last_attestation_id, now, nonce, quote, signature)[1],
        "nonce": nonce, "created_at": now, "expires_at": nonce_expires,
    }  # fmt: skip
    try:
        row = prepared(s, once).first(s, params)
    except sa_exc.IntegrityError as exc:
        if _sqlstate(exc) == UNIQUE_VIOLATION and _table(exc) == NONCES.name:
            return Repeat(False, False, 0)
        raise
    assert row is not None
    refreshed, count = row
    # Not refreshed: nothing was written, the nonce is not used (the full record decides).
    return Repeat(True, refreshed == 1, int(count or 0))


UNIQUE_VIOLATION = "23505"


def _sqlstate(exc: sa_exc.DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def _table(exc: sa_exc.DBAPIError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "table_name", None)


def repeats_of(s: Session, attestation_ids: list[int]) -> dict[int, AttestationRepeat]:
    """The repeat rows of these attestations, by attestation id."""
    if not attestation_ids:
        return {}
    q = select(AttestationRepeat).where(AttestationRepeat.attestation_id.in_(attestation_ids))
    return {r.attestation_id: r for r in s.scalars(q)}


def count_nodes(s: Session) -> int:
    return int(
        s.connection().execute(select(func.count()).select_from(Node.__table__)).scalar() or 0
    )
