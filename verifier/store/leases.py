"""Leases: a background job runs in exactly one instance at a time, and resumes after a crash.

A lease row names its holder, until when it holds it, and the job's ``cursor`` (where it got
to). ``acquire`` succeeds only when the row is absent or expired. Each batch of work starts its
transaction with ``extend`` — an UPDATE that matches only while the caller still holds an
unexpired lease — so the batch and the lease commit together: on PostgreSQL the lease row stays
locked until the batch commits (a second holder waits, bounded by ``lock_timeout``); an instance
that was frozen past its lease finds ``extend`` matching nothing and rolls its batch back. A job
killed mid-run leaves its cursor; whoever acquires the expired lease continues from there.
``finish`` keeps the lease until the job is next due, which makes the lease row the schedule too.

Times come from the instances' clocks (keep them in sync, e.g. NTP); the lease TTL is far longer
than any expected skew.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .models import Lease

LEASES = cast(Table, Lease.__table__)
L = LEASES.c


@dataclass(frozen=True, slots=True)
class Held:
    """A lease this caller holds now, and the cursor the job left."""

    name: str
    holder: str
    cursor: str


def acquire(s: Session, name: str, holder: str, now: dt.datetime, ttl: float) -> Held | None:
    """Take ``name`` if nobody holds it (absent or expired); None if someone does."""
    until = now + dt.timedelta(seconds=ttl)
    maker: Any = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    inserted = s.connection().execute(
        maker(LEASES)
        .values(name=name, holder=holder, expires_at=until, cursor="", updated_at=now)
        .on_conflict_do_nothing()
        .returning(L.name)
    )
    if inserted.first() is not None:
        return Held(name, holder, "")
    taken = s.connection().execute(
        update(LEASES)
        .where(L.name == name, L.expires_at <= now)
        .values(holder=holder, expires_at=until, updated_at=now)
        .returning(L.cursor)
    )
    row = taken.first()
    return None if row is None else Held(name, holder, str(row[0]))


def extend(s: Session, held: Held, now: dt.datetime, ttl: float, cursor: str | None = None) -> bool:
    """Renew the lease (and move its cursor) in the caller's transaction; False when it is no
    longer ours (it expired and another instance took it): then roll the batch back."""
    values: dict[str, Any] = {"expires_at": now + dt.timedelta(seconds=ttl), "updated_at": now}
    if cursor is not None:
        values["cursor"] = cursor
    result = s.connection().execute(
        update(LEASES)
        .where(L.name == held.name, L.holder == held.holder, L.expires_at > now)
        .values(**values)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


def finish(s: Session, held: Held, now: dt.datetime, next_due: dt.datetime) -> bool:
    """The job is done: keep the lease (nobody runs it) until ``next_due``, cursor reset."""
    result = s.connection().execute(
        update(LEASES)
        .where(L.name == held.name, L.holder == held.holder)
        .values(expires_at=next_due, cursor="", updated_at=now)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


def holder_of(s: Session, name: str) -> tuple[str, dt.datetime] | None:
    row = s.connection().execute(select(L.holder, L.expires_at).where(L.name == name)).first()
    return None if row is None else (str(row[0]), row[1])
