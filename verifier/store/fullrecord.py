"""PostgreSQL: an attestation's full record as one statement on a ``Raw`` autocommit connection.

What ``Store.write()`` did in seven statements and two more round trips (BEGIN, the node locked
with its nonce used, the event-log and verdict look-ups, the attestation INSERT … RETURNING, the
node UPDATE, the change-feed INSERT, COMMIT) is one statement of data-modifying CTEs: one
snapshot, one transaction, all or nothing, and no transaction open between two messages of the
client (one frozen mid-write holds no lock).

It writes only where the node's row is still the one the verdict was reached on — its version
(every change but an unchanged re-attestation's refresh bumps it), its TPM clock (the refresh
moves only that) and the golden version — and otherwise writes nothing at all (then the caller
reads the node again). The used nonce is inserted from the locked row without ON CONFLICT: one
used already (by any instance) fails the whole statement, a unique violation on ``nonces``.
The attestation's id, which the node and the change feed refer to, comes from its own
``RETURNING``; the feed's payload gets it in SQL (``attestation_id``, as text, as
``events.node_state_row`` has it), appended to the payload's JSON text.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import JSON, Table, Text, bindparam, func, literal, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert

from .cluster import ClusterEvent
from .hotpath import (
    _GOLDEN_VERSION,
    ATTESTATIONS,
    NODES,
    NONCES,
    TOUCH_AFTER,
    UNIQUE_VIOLATION,
    VERDICTS,
    A,
    N,
    _nonce_from,
    _sqlstate,
    _table,
)
from .models import EventLogBlob
from .prepared import Raw, prepared

EVENTS = cast(Table, ClusterEvent.__table__)
LOGS = cast(Table, EventLogBlob.__table__)
_EVENT_COLUMNS = ("event_id", "type", "node", "created_at")


@dataclass(frozen=True, slots=True)
class FullRecord:
    """What one full record writes (the node as the verdict saw it, and the new rows)."""

    node_id: int
    row_version: int
    last_clock: int | None
    golden: int
    nonce: bytes
    nonce_expires: dt.datetime
    now: dt.datetime
    attestation: Mapping[str, Any]
    """The attestation's columns (``node_id`` among them)."""
    node: Mapping[str, Any]
    """The node's columns to set, ``last_attestation_id`` aside (the new row's id)."""
    event: Mapping[str, Any] | None
    """The change feed's row (``event_id``, ``type``, ``node``, ``created_at``, ``payload``) when
    the node's standing moved; the payload's ``attestation_id`` is set in SQL."""
    log: tuple[str, bytes] | None
    """An event log to store (its SHA-256 hex and bytes), kept once: an existing one is left."""
    verdict: tuple[str, bytes] | None
    """The verdict document (digest, zlib-compressed canonical JSON), unless the caller knows it
    is stored and was touched within ``TOUCH_AFTER``: stored once, and touched when older."""


@dataclass(frozen=True, slots=True)
class Written:
    """The statement's answer."""

    attestation_id: int | None
    """None: the node changed (or went) since it was read, and nothing was written."""
    row_version: int | None
    """The node row's version as the write left it (its trigger bumped it): what a snapshot
    kept after this record must carry. None when nothing was written."""
    nonce_fresh: bool
    verdict_created: dt.datetime | None
    """When the verdict's row was created or last touched, as this write left it (None when the
    record passed no verdict or wrote nothing)."""


def write(raw: Raw, rec: FullRecord) -> Written:
    """The full record ``rec`` in one statement (``Store.raw_write()`` on PostgreSQL)."""
    key = (
        tuple(rec.attestation),
        tuple(rec.node),
        rec.event is not None,
        rec.log is not None,
        rec.verdict is not None,
    )
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _STATEMENTS[key] = _statement(*key)
    params: dict[str, Any] = {
        "b_id": rec.node_id, "b_row_version": rec.row_version, "b_clock": rec.last_clock,
        "b_golden": rec.golden, "nonce": rec.nonce, "created_at": rec.now,
        "expires_at": rec.nonce_expires,
    }  # fmt: skip
    params.update({f"a_{c}": v for c, v in rec.attestation.items()})
    params.update({f"n_{c}": v for c, v in rec.node.items()})
    if rec.event is not None:
        params.update({f"e_{c}": rec.event[c] for c in _EVENT_COLUMNS})
        params["e_payload_head"] = payload_head(rec.event["payload"])
    if rec.log is not None:
        digest, data = rec.log
        params.update(l_sha256=digest, l_data=data, l_size=len(data))
    if rec.verdict is not None:
        digest, data = rec.verdict
        params.update(v_sha256=digest, v_data=data, v_now=rec.now, v_stale=rec.now - TOUCH_AFTER)
    try:
        row = prepared(raw, stmt).first(raw, params)
    except sa_exc.IntegrityError as exc:
        if _sqlstate(exc) == UNIQUE_VIOLATION and _table(exc) == NONCES.name:
            return Written(None, None, False, None)
        raise
    assert row is not None
    attestation_id, row_version, before = row
    if attestation_id is None:
        return Written(None, None, True, None)
    created = None
    if rec.verdict is not None:  # ``before``: the row as the statement's snapshot saw it
        created = rec.now if before is None or before < rec.now - TOUCH_AFTER else before
    return Written(int(attestation_id), int(row_version), True, created)


def payload_head(payload: Mapping[str, Any]) -> str:
    """``payload`` as JSON text without its closing brace and without ``attestation_id``, which
    the statement appends (the row it inserts has the id)."""
    rest = {k: v for k, v in payload.items() if k != "attestation_id"}
    text = json.dumps(rest, separators=(",", ":"))
    assert rest and text.endswith("}")
    return text[:-1]


_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def _typed(prefix: str, table: Table, columns: tuple[str, ...]) -> list[Any]:
    return [bindparam(f"{prefix}{c}", type_=table.c[c].type) for c in columns]


def _statement(
    attestation: tuple[str, ...], node: tuple[str, ...], event: bool, log: bool, verdict: bool
) -> Any:
    """The statement for one shape of record, built once (so it is prepared once)."""
    ok = (
        select(N.id)
        .where(
            N.id == bindparam("b_id"),
            N.row_version == bindparam("b_row_version"),
            N.last_clock.is_not_distinct_from(bindparam("b_clock", type_=N.last_clock.type)),
            func.coalesce(_GOLDEN_VERSION, 0) == bindparam("b_golden"),
        )
        .with_for_update()
        .cte("ok")
    )
    ctes: list[Any] = [_nonce_from(ok.c.id).cte("used")]  # no ON CONFLICT: a used nonce fails all
    att = (
        pg_insert(ATTESTATIONS)
        .from_select(
            list(attestation),
            select(*_typed("a_", ATTESTATIONS, attestation)).select_from(ok),
            include_defaults=False,
        )
        .returning(A.id, A.node_id)
        .cte("att")
    )
    moved = (
        update(NODES)
        .where(N.id == att.c.node_id)
        .values({"last_attestation_id": att.c.id, **{c: bindparam(f"n_{c}") for c in node}})
        .returning(N.row_version)  # after the trigger (BEFORE UPDATE) bumped it
        .cte("moved")
    )
    ctes.append(moved)
    if event:
        # Text, not jsonb: jsonb refuses a string holding U+0000, and a reason may quote the log.
        with_id = (
            bindparam("e_payload_head", type_=Text)
            + literal(',"attestation_id":"', Text)
            + sql_cast(att.c.id, Text)
            + literal('"}', Text)
        )
        feed = pg_insert(EVENTS).from_select(
            [*_EVENT_COLUMNS, "payload"],
            select(*_typed("e_", EVENTS, _EVENT_COLUMNS), sql_cast(with_id, JSON)).select_from(att),
            include_defaults=False,
        )
        ctes.append(feed.cte("feed"))
    if log:
        blob = pg_insert(LOGS).from_select(
            ["sha256", "data", "size", "created_at"],
            select(
                *_typed("l_", LOGS, ("sha256", "data", "size")),
                bindparam("created_at", type_=LOGS.c.created_at.type),
            ).select_from(ok),
            include_defaults=False,
        )
        ctes.append(blob.on_conflict_do_nothing().cte("blob"))
    before: Any = literal(None, type_=VERDICTS.c.created_at.type)
    if verdict:
        doc = pg_insert(VERDICTS).from_select(
            ["sha256", "data", "created_at"],
            select(
                *_typed("v_", VERDICTS, ("sha256", "data")),
                bindparam("created_at", type_=VERDICTS.c.created_at.type),
            ).select_from(ok),
            include_defaults=False,
        )
        ctes.append(doc.on_conflict_do_nothing().cte("doc"))
        # Only an old row is locked and touched (the UPDATE's WHERE is checked before it locks).
        touch = (
            update(VERDICTS)
            .where(
                VERDICTS.c.sha256 == bindparam("v_sha256"),
                VERDICTS.c.created_at < bindparam("v_stale", type_=VERDICTS.c.created_at.type),
                select(ok.c.id).exists(),
            )
            .values(created_at=bindparam("v_now", type_=VERDICTS.c.created_at.type))
        )
        ctes.append(touch.cte("touch"))
        before = (
            select(VERDICTS.c.created_at)
            .where(VERDICTS.c.sha256 == bindparam("v_sha256"))
            .scalar_subquery()
        )
    return select(
        select(att.c.id).scalar_subquery(),
        select(moved.c.row_version).scalar_subquery(),
        before,
    ).add_cte(*ctes)
