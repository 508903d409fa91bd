"""Bounded growth: retention of attestations, collection of unreferenced blobs, used nonces.

Each function does one batch in the caller's transaction and says how far it got, so a job can
commit batch by batch under its lease (``leases``) and resume after a crash.

What retention never deletes, whatever its age (a reviewer needs it, or re-appraisal does):
- a node's last attestation (``nodes.last_attestation_id``) and its latest evidence;
- every attestation of a node with an open failure (state ``untrusted``, ``unknown`` or
  ``quarantined``) made since that state began (``state_since``), and the one before it;
- an attestation an open incident names (``new`` or ``acknowledged``: the console's review) or
  an undecided golden draft was made from (four-eyes promotion re-verifies it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, delete, func, select
from sqlalchemy.orm import Session

from verifier.appraisal.verdict import VerdictStatus as Status

from .models import (
    Attestation,
    AttestationSource,
    DraftState,
    EventLogBlob,
    GoldenDraft,
    Incident,
    IncidentNode,
    Node,
    NodeState,
    Nonce,
    TriageState,
    VerdictBlob,
)

ATT = cast(Table, Attestation.__table__)
NODES = cast(Table, Node.__table__)
A, N = ATT.c, NODES.c
OPEN_FAILURE = (NodeState.UNTRUSTED, NodeState.UNKNOWN, NodeState.QUARANTINED)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long attestations are kept: trusted ones, and failures and state changes."""

    success: dt.timedelta
    failure: dt.timedelta


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch's outcome: rows deleted, and the cursor to resume from (None: pass finished)."""

    deleted: int
    cursor: int | None


@dataclass(frozen=True, slots=True)
class BlobBatch:
    """One blob batch: blobs deleted, and the digest to resume after (None: pass finished)."""

    deleted: int
    cursor: str | None


def _protected(s: Session, node_ids: set[int]) -> tuple[set[int], dict[int, dt.datetime]]:
    """(attestation ids never deleted, open-failure start per node) for these nodes."""
    keep: set[int] = set()
    since: dict[int, dt.datetime] = {}
    rows = s.execute(
        select(N.id, N.last_attestation_id, N.state, N.state_since).where(N.id.in_(node_ids))
    )
    for node_id, last_id, state, state_since in rows:
        if last_id is not None:
            keep.add(int(last_id))
        if state in OPEN_FAILURE:
            since[int(node_id)] = state_since
    latest = s.execute(
        select(func.max(A.id))
        .where(A.node_id.in_(node_ids), A.source == AttestationSource.EVIDENCE)
        .group_by(A.node_id)
    )
    keep.update(int(i) for (i,) in latest if i is not None)
    under_review = s.execute(
        select(IncidentNode.attestation_id)
        .join(Incident, Incident.id == IncidentNode.incident_id)
        .where(
            IncidentNode.node_id.in_(node_ids),
            Incident.state.in_((TriageState.NEW, TriageState.ACKNOWLEDGED)),
        )
    )
    keep.update(int(i) for (i,) in under_review)
    drafted = s.execute(
        select(GoldenDraft.attestation_id).where(GoldenDraft.state == DraftState.DRAFT)
    )
    keep.update(int(i) for (i,) in drafted)
    return keep, since


def retention_batch(
    s: Session, policy: Retention, now: dt.datetime, cursor: int, size: int = 1000
) -> Batch:
    """Delete expired attestations among the ``size`` after id ``cursor`` (ids grow with time,
    so the pass ends at the first row younger than the shorter retention)."""
    young = now - min(policy.success, policy.failure)
    rows = s.execute(
        select(A.id, A.node_id, A.created_at, A.status, A.reboot)
        .where(A.id > cursor)
        .order_by(A.id)
        .limit(size)
    ).all()
    if not rows:
        return Batch(0, None)
    keep, open_since = _protected(s, {int(r.node_id) for r in rows})
    doomed: list[int] = []
    for r in rows:
        if r.created_at >= young:
            break
        change = r.status != Status.TRUSTED or r.reboot
        limit = policy.failure if change else policy.success
        opened = open_since.get(int(r.node_id))
        if r.id in keep or r.created_at >= now - limit or (opened and r.created_at >= opened):
            continue
        doomed.append(int(r.id))
    if doomed:
        s.execute(delete(Attestation).where(Attestation.id.in_(doomed)))
    finished = len(rows) < size or rows[-1].created_at >= young
    return Batch(len(doomed), None if finished else int(rows[-1].id))


NONCE_BATCH = 5000


def purge_nonces(s: Session, now: dt.datetime, size: int = NONCE_BATCH) -> int:
    """Forget used nonces past their expiry (they can no longer be presented)."""
    ids = select(Nonce.id).where(Nonce.expires_at <= now).limit(size).scalar_subquery()
    result = s.execute(delete(Nonce).where(Nonce.id.in_(ids)))
    return int(getattr(result, "rowcount", 0) or 0)


def collect_logs(
    s: Session, now: dt.datetime, grace: dt.timedelta, cursor: str, size: int = 200
) -> BlobBatch:
    """Delete event logs after ``cursor`` (by digest) that no attestation and no node's current
    boot refers to and that are older than ``grace`` (a concurrent new reference is refused by
    the foreign key, which rolls the batch back; the next pass retries)."""
    logs = list(
        s.scalars(
            select(EventLogBlob.sha256)
            .where(EventLogBlob.sha256 > cursor, EventLogBlob.created_at < now - grace)
            .order_by(EventLogBlob.sha256)
            .limit(size)
        )
    )
    used = set(s.scalars(select(A.event_log_sha256).where(A.event_log_sha256.in_(logs))))
    used |= set(s.scalars(select(N.boot_log_sha256).where(N.boot_log_sha256.in_(logs))))
    dead = [h for h in logs if h not in used]
    if dead:
        s.execute(delete(EventLogBlob).where(EventLogBlob.sha256.in_(dead)))
    return BlobBatch(len(dead), logs[-1] if len(logs) == size else None)


def collect_verdicts(
    s: Session, now: dt.datetime, grace: dt.timedelta, cursor: str, size: int = 500
) -> BlobBatch:
    """Delete verdict documents after ``cursor`` that no attestation refers to and nobody
    touched for ``grace`` (``hotpath.put_verdict`` touches one whenever it is referred to)."""
    verdicts = list(
        s.scalars(
            select(VerdictBlob.sha256)
            .where(VerdictBlob.sha256 > cursor, VerdictBlob.created_at < now - grace)
            .order_by(VerdictBlob.sha256)
            .limit(size)
        )
    )
    held = set(s.scalars(select(A.verdict_sha256).where(A.verdict_sha256.in_(verdicts))))
    dead = [h for h in verdicts if h not in held]
    if dead:
        s.execute(delete(VerdictBlob).where(VerdictBlob.sha256.in_(dead)))
    return BlobBatch(len(dead), verdicts[-1] if len(verdicts) == size else None)
