"""Tables and queries of the cluster integration (migration 0006): the change feed that is also
the webhooks' outbox, the delivery cursors, and the EAR signing keys kept in the database.

Kept apart from ``models``/``repo`` (the attestation path's) so the two evolve separately; the
models share ``Base``, so ``tests/test_store.py`` compares them with the migrations too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Integer,
    LargeBinary,
    String,
    Text,
    bindparam,
    func,
    insert,
    select,
    update,
)  # fmt: skip
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from .models import Base, UtcDateTime
from .prepared import prepared


class ClusterEvent(Base):
    """A node state change or golden revocation, written in the transaction that made it."""

    __tablename__ = "cluster_events"
    # A seq is never reused, even after pruning.
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    node: Mapped[str | None] = mapped_column(String(253))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class WebhookCursor(Base):
    """Per receiver: the last event delivered, the retry state, and who holds the delivery lease."""

    __tablename__ = "webhook_cursors"

    receiver: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    locked_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str] = mapped_column(Text, default="")
    delivered: Mapped[int] = mapped_column(Integer, default=0)


class EarSigningKey(Base):
    """An EAR signing key (PKCS#8 PEM); the newest unretired one signs."""

    __tablename__ = "ear_signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_pem: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    retired_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


# --- the change feed ------------------------------------------------------------------------


_EVENT_COLUMNS = ("event_id", "type", "node", "created_at", "payload")
_INSERT_EVENT = insert(ClusterEvent).values({c: bindparam(c) for c in _EVENT_COLUMNS})


def add_event(
    s: Session,
    *,
    event_id: str,
    type: str,
    node: str | None,
    created_at: dt.datetime,
    payload: dict[str, Any],
) -> None:
    """Insert one change-feed event in ``s``'s transaction now (one prepared INSERT: no ORM
    object, no unit of work)."""
    values = {"event_id": event_id, "type": type, "node": node, "created_at": created_at}
    prepared(s, _INSERT_EVENT).rowcount(s, {**values, "payload": payload})


def last_seq(s: Session) -> int:
    return int(s.scalar(select(func.max(ClusterEvent.seq))) or 0)


GAP_WAIT = 10.0
"""Seconds a hole in ``seq`` is waited for before it is taken as a rolled-back transaction."""


def settled(rows: Sequence[ClusterEvent], after: int, now: dt.datetime) -> list[ClusterEvent]:
    """The rows a follower may consume: those before the first hole in ``seq``.

    With several writers (PostgreSQL), sequence numbers are taken at insert and transactions
    commit in any order, so ``seq`` 7 can be visible while 6 is still being committed; a follower
    that moved past 7 would never see 6. A hole is therefore waited for — unless the row after
    it is older than ``GAP_WAIT``, when the hole is a transaction that rolled back (a sequence
    number is never given back). SQLite serialises writers, so it has no such holes.
    """
    out: list[ClusterEvent] = []
    expected = after + 1
    for row in rows:
        if row.seq != expected and (now - row.created_at).total_seconds() < GAP_WAIT:
            break
        out.append(row)
        expected = row.seq + 1
    return out


def events_after(
    s: Session, seq: int, *, limit: int, now: dt.datetime | None = None
) -> list[ClusterEvent]:
    """Events after ``seq`` in order; with ``now``, only those ``settled`` at ``now``."""
    q = select(ClusterEvent).where(ClusterEvent.seq > seq).order_by(ClusterEvent.seq).limit(limit)
    rows = list(s.scalars(q))
    return rows if now is None else settled(rows, seq, now)


def settled_seq(s: Session, now: dt.datetime, *, window: int = 256) -> int:
    """The highest ``seq`` up to which every event is visible or given up on (see ``settled``).

    One query for the newest ``window`` events (the usual case: at most a few are younger than
    ``GAP_WAIT``); a burst of more young events than that takes a second, unbounded look."""
    cutoff = now - dt.timedelta(seconds=GAP_WAIT)
    newest = s.execute(
        select(ClusterEvent.seq, ClusterEvent.created_at)
        .order_by(ClusterEvent.seq.desc())
        .limit(window)
    ).all()
    old = next((i for i, (_, at) in enumerate(newest) if at < cutoff), None)
    if old is None and len(newest) == window:
        base = int(
            s.scalar(select(func.max(ClusterEvent.seq)).where(ClusterEvent.created_at < cutoff))
            or 0
        )
        young = list(
            s.scalars(
                select(ClusterEvent.seq).where(ClusterEvent.seq > base).order_by(ClusterEvent.seq)
            )
        )
    else:
        base = int(newest[old][0]) if old is not None else 0
        young = [int(seq) for seq, _ in reversed(newest[: old if old is not None else len(newest)])]
    expected = base + 1
    for seq in young:
        if seq != expected:
            break
        expected = seq + 1
    return expected - 1


def prune_events(s: Session, before: dt.datetime, keep_after: int) -> int:
    """Delete events older than ``before`` that every receiver has (``seq <= keep_after``),
    always keeping the newest, so the feed's end stays where it was."""
    keep_after = min(keep_after, last_seq(s) - 1)
    old = select(ClusterEvent).where(
        ClusterEvent.created_at < before, ClusterEvent.seq <= keep_after
    )
    rows = list(s.scalars(old))
    for row in rows:
        s.delete(row)
    return len(rows)


# --- webhook cursors ------------------------------------------------------------------------


def cursor(s: Session, receiver: str) -> WebhookCursor:
    """The receiver's cursor, created at the current end of the feed the first time it is seen
    (a new receiver gets the events from then on, not the history)."""
    row = s.get(WebhookCursor, receiver)
    if row is not None:
        return row
    try:
        with s.begin_nested():
            s.add(WebhookCursor(receiver=receiver, last_seq=last_seq(s), last_error=""))
    except IntegrityError:
        pass
    row = s.get(WebhookCursor, receiver)
    assert row is not None
    return row


def cursors(s: Session, receivers: Sequence[str]) -> list[WebhookCursor]:
    return [cursor(s, r) for r in receivers]


def all_cursors(s: Session) -> list[WebhookCursor]:
    return list(s.scalars(select(WebhookCursor)))


def claim_cursor(s: Session, receiver: str, holder: str, now: dt.datetime, lease: float) -> bool:
    """Take the receiver's delivery lease if it is free (or expired): atomic on any database."""
    stmt = (
        update(WebhookCursor)
        .where(WebhookCursor.receiver == receiver)
        .where((WebhookCursor.locked_until.is_(None)) | (WebhookCursor.locked_until < now))
        .values(locked_until=now + dt.timedelta(seconds=lease), locked_by=holder)
    )
    return bool(s.execute(stmt).rowcount)  # type: ignore[attr-defined]


# --- EAR keys -------------------------------------------------------------------------------


def ear_keys(s: Session) -> list[EarSigningKey]:
    return list(s.scalars(select(EarSigningKey).order_by(EarSigningKey.created_at)))


def add_ear_key(s: Session, key: EarSigningKey) -> None:
    s.add(key)
