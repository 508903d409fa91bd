"""The cluster's change feed: one event per node state change and golden revocation, written in
the same transaction as the change itself.

Every change of a node's state passes ``attestation.state_changed`` (verdicts, re-appraisals,
the stale sweep, quarantine and release), which writes ``node_state_row``'s row; enrollment writes
``node_state_changed`` for a node it creates or re-enrolls, and golden retire/revoke calls
``golden_status_changed``; nothing else writes the feed. Because the event commits or rolls
back with the change, the feed is a durable outbox: the webhook dispatcher (``webhooks``)
delivers each event at least once, the Kubernetes controller and the extender's node cache
follow it (``GET /v1/events``), and a crash between the change and the delivery loses nothing.
``event_id`` is the receivers' idempotency key.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from verifier.store import Store, cluster
from verifier.store.models import Attestation, Node, NodeState, iso

NODE_STATE_CHANGED = "node.state_changed"
NODE_DELETED = "node.deleted"
NODE_MOVED = "node.moved"
GOLDEN_STATUS_CHANGED = "golden.status_changed"
TYPES = (NODE_STATE_CHANGED, NODE_DELETED, NODE_MOVED, GOLDEN_STATUS_CHANGED)


@dataclass(frozen=True, slots=True)
class Standing:
    """A node's stored state and reason at one moment (what a change is measured against)."""

    state: NodeState
    reason: str


def standing(node: Node) -> Standing:
    return Standing(node.state, node.reason)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _row(kind: str, node: str | None, now: dt.datetime, body: dict[str, Any]) -> dict[str, Any]:
    """The feed's row of one event (``cluster.add_event``'s arguments)."""
    event_id = str(uuid.uuid4())
    payload = {"id": event_id, "type": kind, "time": iso(now), **body}
    return {"event_id": event_id, "type": kind, "node": node, "created_at": now, "payload": payload}


def _add(db: Session, kind: str, node: str | None, now: dt.datetime, body: dict[str, Any]) -> None:
    cluster.add_event(db, **_row(kind, node, now, body))


def node_state_changed(
    db: Session,
    node: Node,
    before: Standing | None,
    attestation: Attestation | None = None,
    *,
    now: dt.datetime | None = None,
) -> None:
    """Record ``node``'s move from ``before`` (None: a node just enrolled) to its current
    state, in ``db``'s transaction.

    Nothing is recorded when neither the state nor the reason changed (a trusted node that
    re-attests), so the feed grows with changes, not with attestations.
    """
    if standing(node) == before:
        return
    row = node_state_row(
        node=node.name,
        old_state=None if before is None else before.state,
        new_state=node.state,
        reason=node.reason,
        attestation_id=None if attestation is None else attestation.id,
        golden=node.golden_versions or (),
        when=now or (attestation.created_at if attestation is not None else _utcnow()),
    )
    add_row(db, row)


def add_row(db: Session, row: dict[str, Any]) -> None:
    """Insert one event row (``node_state_row``'s) in ``db``'s transaction."""
    cluster.add_event(db, **row)


def node_state_row(
    *,
    node: str,
    old_state: NodeState | None,
    new_state: NodeState,
    reason: str,
    attestation_id: int | None,
    golden: Sequence[str],
    when: dt.datetime,
) -> dict[str, Any]:
    """One ``node.state_changed`` event's row (callers pass only real changes): inserted by
    ``add_row``, or by ``fullrecord`` in the statement of the record it belongs to (which sets
    the payload's ``attestation_id`` from the row it inserts)."""
    body = {
        "node": node,
        "old_state": None if old_state is None else str(old_state),
        "new_state": str(new_state),
        "reason": reason,
        "attestation_id": None if attestation_id is None else str(attestation_id),
        "golden": list(golden),
    }
    return _row(NODE_STATE_CHANGED, node, when, body)


def node_deleted(db: Session, name: str, *, now: dt.datetime) -> None:
    _add(db, NODE_DELETED, name, now, {"node": name})


def node_moved(db: Session, old_name: str, new_name: str, *, now: dt.datetime) -> None:
    _add(db, NODE_MOVED, new_name, now, {"node": new_name, "from": old_name})
    _add(db, NODE_DELETED, old_name, now, {"node": old_name, "moved_to": new_name})


def golden_status_changed(
    db: Session, name: str, version: str, status: str, reason: str, *, now: dt.datetime
) -> None:
    """A golden version retired or revoked (the re-appraised nodes' changes follow as their own)."""
    body = {"golden": f"{name}@{version}", "status": status, "reason": reason}
    _add(db, GOLDEN_STATUS_CHANGED, None, now, body)


# --- reading the feed -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedPage:
    events: tuple[dict[str, Any], ...]
    last_seq: int
    """The newest ``seq`` the page covers: pass it as ``after`` to continue."""

    def to_json(self) -> dict[str, Any]:
        return {"events": list(self.events), "last_seq": self.last_seq}


POLL = 0.2
"""Seconds between looks at the feed while a long poll waits (each look is one indexed query)."""


def feed(
    store: Store,
    after: int,
    *,
    wait: float,
    limit: int,
    monotonic: Callable[[], float],
    sleep: Callable[[float], None],
    now: Callable[[], dt.datetime] = _utcnow,
) -> FeedPage:
    """Events with ``seq > after`` (oldest first, at most ``limit``), waiting up to ``wait``
    seconds for the first one: a long poll, so followers learn of a change within ``POLL`` s
    without polling the fleet. Reads the database, so it sees changes made by any instance."""
    deadline = monotonic() + wait
    while True:
        with store.read() as db:
            rows = cluster.events_after(db, after, limit=limit, now=now())
            # Nothing settled: ``after`` again — or the feed's end if that is lower (a reset).
            last = rows[-1].seq if rows else min(after, cluster.last_seq(db))
            page = FeedPage(tuple({**r.payload, "seq": r.seq} for r in rows), last)
        if rows or monotonic() >= deadline:
            return page
        sleep(POLL)
