"""Repository functions of the review console's tables (migration 0004): sessions, incidents,
golden drafts, and the read queries its pages need. Like ``repo``: one ``Session`` in, rows out,
no commit, no policy."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from .models import (
    Attestation,
    AuditEntry,
    ConsoleMarker,
    ConsoleSession,
    DraftState,
    GoldenDraft,
    Incident,
    IncidentNode,
    IncidentNote,
    Node,
    TriageState,
)

# --- sessions -------------------------------------------------------------------------------


def get_session(s: Session, session_hash: str) -> ConsoleSession | None:
    return s.get(ConsoleSession, session_hash)


def end_sessions_of(s: Session, token_id: str, now: dt.datetime) -> None:
    s.execute(
        update(ConsoleSession)
        .where(ConsoleSession.token_id == token_id, ConsoleSession.ended_at.is_(None))
        .values(ended_at=now)
        .execution_options(synchronize_session=False)
    )


NODE_FIELDS = (
    Node.name, Node.state, Node.state_since, Node.reason, Node.labels, Node.golden_versions,
    Node.last_attestation_id, Node.last_attested_at, Node.last_success_at, Node.last_reset_count,
    Node.last_restart_count, Node.last_reboot_at, Node.enrolled_at, Node.ek_fingerprint,
    Node.ak_name, Node.booted_versions,
)  # fmt: skip


LIST_FIELDS = (
    Node.name, Node.state, Node.reason, Node.labels, Node.golden_versions, Node.last_success_at,
    Node.enrolled_at,
)  # fmt: skip
"""What the node list filters on (a node's state as of now needs the last three)."""
SORT_FIELDS = {"state_since": Node.state_since, "last_attested_at": Node.last_attested_at}


def node_rows(s: Session, names: Sequence[str] | None = None) -> list[Any]:
    """Nodes as light rows of the columns a node view needs (no ORM objects), by name; only
    ``names`` when given."""
    q = select(*NODE_FIELDS).order_by(Node.name)
    if names is not None:
        q = q.where(Node.name.in_(list(names)))
    return list(s.execute(q).all())


def node_list_rows(s: Session, sort: str | None = None) -> list[Any]:
    """Every node with only what the list filters on (and the ``sort`` column), by name."""
    extra = (SORT_FIELDS[sort],) if sort in SORT_FIELDS else ()
    return list(s.execute(select(*LIST_FIELDS, *extra).order_by(Node.name)).all())


# --- markers --------------------------------------------------------------------------------


def marker(s: Session, name: str) -> int:
    row = s.get(ConsoleMarker, name)
    return 0 if row is None else row.value


def advance_marker(s: Session, name: str, old: int, new: int) -> bool:
    """Compare-and-set ``name`` from ``old`` to ``new``; False if another writer moved it first."""
    if s.get(ConsoleMarker, name) is None:
        if old != 0:
            return False
        s.add(ConsoleMarker(name=name, value=new))
        s.flush()
        return True
    result = s.execute(
        update(ConsoleMarker)
        .where(ConsoleMarker.name == name, ConsoleMarker.value == old)
        .values(value=new)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


# --- attestations for the console -----------------------------------------------------------


def attestations_after(s: Session, after_id: int, limit: int) -> list[tuple[Attestation, str]]:
    """Attestations with id > ``after_id`` (oldest first) and their node's name."""
    q = (
        select(Attestation, Node.name)
        .join(Node, Node.id == Attestation.node_id)
        .where(Attestation.id > after_id)
        .order_by(Attestation.id)
        .limit(limit)
    )
    return [(a, name) for a, name in s.execute(q).all()]


def max_attestation_id(s: Session) -> int:
    return int(s.scalar(select(func.max(Attestation.id))) or 0)


def failures_since(s: Session, since: dt.datetime) -> list[tuple[dt.datetime, str]]:
    """(time, status) of every attestation not ``trusted`` since ``since``."""
    q = (
        select(Attestation.created_at, Attestation.status)
        .where(Attestation.created_at >= since, Attestation.status != "trusted")
        .order_by(Attestation.created_at)
    )
    return [(t, str(status)) for t, status in s.execute(q).all()]


def last_trusted_before(s: Session, node_id: int, before_id: int) -> Attestation | None:
    q = (
        select(Attestation)
        .where(
            Attestation.node_id == node_id,
            Attestation.id < before_id,
            Attestation.status == "trusted",
        )
        .order_by(Attestation.id.desc())
        .limit(1)
    )
    return s.scalars(q).first()


def audit_about(s: Session, targets: Sequence[str], limit: int) -> list[AuditEntry]:
    q = (
        select(AuditEntry)
        .where(AuditEntry.target.in_(list(targets)))
        .order_by(AuditEntry.id.desc())
        .limit(limit)
    )
    return list(s.scalars(q))


def token_creator(s: Session, token_id: str) -> str | None:
    """Who created token ``token_id`` (the actor of its ``token_create`` audit entry)."""
    q = (
        select(AuditEntry.actor)
        .where(AuditEntry.action == "token_create", AuditEntry.target == f"token:{token_id}")
        .limit(1)
    )
    return s.scalars(q).first()


# --- incidents ------------------------------------------------------------------------------


def incident_by_key(s: Session, key: str) -> Incident | None:
    return s.scalars(select(Incident).where(Incident.key == key)).first()


def list_incidents(
    s: Session, *, states: Sequence[TriageState] | None = None, limit: int = 200
) -> list[Incident]:
    q = select(Incident).order_by(Incident.last_seen.desc(), Incident.id.desc()).limit(limit)
    if states:
        q = q.where(Incident.state.in_(list(states)))
    return list(s.scalars(q))


def incident_member(s: Session, incident_id: int, node_id: int) -> IncidentNode | None:
    q = select(IncidentNode).where(
        IncidentNode.incident_id == incident_id, IncidentNode.node_id == node_id
    )
    return s.scalars(q).first()


def incident_members(s: Session, incident_id: int) -> list[tuple[IncidentNode, str]]:
    q = (
        select(IncidentNode, Node.name)
        .join(Node, Node.id == IncidentNode.node_id)
        .where(IncidentNode.incident_id == incident_id)
        .order_by(Node.name)
    )
    return [(m, name) for m, name in s.execute(q).all()]


def member_counts(s: Session, incident_ids: Sequence[int]) -> dict[int, int]:
    if not incident_ids:
        return {}
    q = (
        select(IncidentNode.incident_id, func.count())
        .where(IncidentNode.incident_id.in_(list(incident_ids)))
        .group_by(IncidentNode.incident_id)
    )
    return {int(i): int(n) for i, n in s.execute(q).all()}


def incident_notes(s: Session, incident_id: int) -> list[IncidentNote]:
    q = select(IncidentNote).where(IncidentNote.incident_id == incident_id)
    return list(s.scalars(q.order_by(IncidentNote.id)))


def incidents_of_node(s: Session, node_name: str) -> list[Incident]:
    q = (
        select(Incident)
        .join(IncidentNode, IncidentNode.incident_id == Incident.id)
        .join(Node, Node.id == IncidentNode.node_id)
        .where(Node.name == node_name)
        .order_by(Incident.last_seen.desc())
    )
    return list(s.scalars(q))


def incidents_of_attestation(s: Session, attestation_id: int) -> list[Incident]:
    q = (
        select(Incident)
        .join(IncidentNode, IncidentNode.incident_id == Incident.id)
        .where(IncidentNode.attestation_id == attestation_id)
    )
    return list(s.scalars(q))


# --- golden drafts --------------------------------------------------------------------------


def list_drafts(
    s: Session, *, state: DraftState | None = None, golden_name: str | None = None
) -> list[GoldenDraft]:
    q = select(GoldenDraft).order_by(GoldenDraft.id.desc())
    if state is not None:
        q = q.where(GoldenDraft.state == state)
    if golden_name is not None:
        q = q.where(GoldenDraft.golden_name == golden_name)
    return list(s.scalars(q))


def draft_versions(s: Session, golden_name: str) -> set[str]:
    """Versions named by drafts of ``golden_name`` that are not rejected."""
    q = select(GoldenDraft.version).where(
        GoldenDraft.golden_name == golden_name, GoldenDraft.state != DraftState.REJECTED
    )
    return set(s.scalars(q))


def as_json_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []
