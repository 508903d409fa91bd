"""Failures grouped across nodes: every attestation failing one check with one got-value belongs
to one incident ("3 nodes booted the same unknown boot application 9f2c…"), with a triage state
(new, acknowledged, resolved, dismissed), an assignee and notes.

Incidents are derived from the stored verdicts, not written by the attestation path: ``refresh``
groups every attestation recorded since the last one it grouped (a high-water mark, advanced by
compare-and-set so two workers never count one twice) and is called before incidents are read.
A resolved incident that fails again becomes ``new`` again (audited as ``incident_reopened``);
a dismissed one stays dismissed. Every triage change and note is audited (who, what, when, why).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from verifier.store import console as store_console
from verifier.store import hotpath, repo
from verifier.store.models import (
    Attestation,
    Incident,
    IncidentNode,
    IncidentNote,
    TriageState,
    iso,
)

from .audit import AuditView
from .context import Services
from .errors import BadRequest, Conflict, NotFound

MARKER = "incidents"
BATCH = 2000
FAILING = ("fail", "unknown")
TITLES = {
    "boot_app_not_approved": "booted the same unknown boot application",
    "cmdline_not_approved": "booted with the same unapproved kernel command line",
    "initrd_not_approved": "loaded the same unapproved initrd",
    "event_not_accounted": "measured the same unaccounted event",
    "golden_revoked": "run a component of a revoked golden version",
    "firmware_blob_not_approved": "ran the same unapproved firmware",
    "moklist_not_approved": "carry the same unapproved MokList",
}


@dataclass(frozen=True, slots=True)
class IncidentView:
    id: int
    check_id: str
    reason: str
    got: str | None
    message: str
    state: TriageState
    assignee: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    nodes: int

    @classmethod
    def of(cls, row: Incident, nodes: int) -> IncidentView:
        return cls(
            row.id,
            row.check_id,
            row.reason,
            row.got,
            row.message,
            row.state,
            row.assignee,
            row.first_seen,
            row.last_seen,
            nodes,
        )

    @property
    def title(self) -> str:
        what = TITLES.get(self.reason, f"fail {self.check_id} ({self.reason})")
        got = f" {self.got[:16]}…" if self.got and len(self.got) > 16 else f" {self.got or ''}"
        return f"{self.nodes} node{'s' if self.nodes != 1 else ''} {what}{got.rstrip()}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "check": self.check_id,
            "reason": self.reason,
            "got": self.got,
            "message": self.message,
            "state": self.state,
            "assignee": self.assignee,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "nodes": self.nodes,
            "title": self.title,
        }


@dataclass(frozen=True, slots=True)
class MemberView:
    node: str
    attestation_id: int
    event: int | None
    first_seen: dt.datetime
    last_seen: dt.datetime
    count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "attestation_id": str(self.attestation_id),
            "event": self.event,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "count": self.count,
        }


@dataclass(frozen=True, slots=True)
class NoteView:
    at: dt.datetime
    actor: str
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"at": iso(self.at), "actor": self.actor, "text": self.text}


@dataclass(frozen=True, slots=True)
class IncidentDetail:
    incident: IncidentView
    members: list[MemberView]
    notes: list[NoteView]
    history: list[AuditView]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.incident.to_json(),
            "members": [m.to_json() for m in self.members],
            "notes": [n.to_json() for n in self.notes],
            "history": [h.to_json() for h in self.history],
        }


def incident_key(check: Mapping[str, Any]) -> str:
    """The grouping key: the check, its reason code and the got-value (hashed: got may be long)."""
    parts = (str(check.get("id", "")), str(check.get("reason", "")), str(check.get("got") or ""))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def parse_triage_state(text: str) -> TriageState:
    try:
        return TriageState(text)
    except ValueError:
        raise BadRequest("bad_field", f"state must be one of {', '.join(TriageState)}") from None


def target(incident_id: int) -> str:
    return f"incident:{incident_id}"


def refresh(svc: Services, *, rounds: int = 50) -> int:
    """Group every attestation recorded since the last refresh; returns how many were read."""
    seen = 0
    for _ in range(rounds):
        try:
            n = _refresh_batch(svc)
        except IntegrityError:  # another worker grouped the same rows first: read again
            continue
        seen += n
        if n < BATCH:
            break
    return seen


def _refresh_batch(svc: Services) -> int:
    with svc.store.write() as db:
        old = store_console.marker(db, MARKER)
        rows = store_console.attestations_after(db, old, BATCH)
        if not rows:
            return 0
        if not store_console.advance_marker(db, MARKER, old, rows[-1][0].id):
            return 0
        for att, _name in rows:
            if att.status != "trusted":
                _group(db, att)
        return len(rows)


def _group(db: Session, att: Attestation) -> None:
    checks = hotpath.verdict_of(db, att).get("checks", [])
    done: set[str] = set()
    for check in checks:
        if not isinstance(check, dict) or check.get("status") not in FAILING:
            continue
        key = incident_key(check)
        if key in done:
            continue
        done.add(key)
        incident = _incident_for(db, key, check, att.created_at)
        _add_member(db, incident, att, check)


def _incident_for(db: Session, key: str, check: Mapping[str, Any], at: dt.datetime) -> Incident:
    row = store_console.incident_by_key(db, key)
    if row is None:
        row = Incident(
            key=key,
            check_id=str(check.get("id", ""))[:64],
            reason=str(check.get("reason", ""))[:64],
            got=None if check.get("got") is None else str(check.get("got")),
            message=str(check.get("message", "")),
            state=TriageState.NEW,
            assignee="",
            first_seen=at,
            last_seen=at,
            changed_at=at,
        )
        db.add(row)
        db.flush()
        return row
    if row.state == TriageState.RESOLVED and at > row.changed_at:
        row.state, row.changed_at = TriageState.NEW, at
        repo.audit(db, "incidents", "incident_reopened", target(row.id), "failed again", now=at)
    row.last_seen = max(row.last_seen, at)
    row.message = str(check.get("message", row.message))
    return row


def _add_member(
    db: Session, incident: Incident, att: Attestation, check: Mapping[str, Any]
) -> None:
    event = check.get("event")
    member = store_console.incident_member(db, incident.id, att.node_id)
    if member is None:
        db.add(
            IncidentNode(
                incident_id=incident.id,
                node_id=att.node_id,
                attestation_id=att.id,
                event=event if isinstance(event, int) else None,
                first_seen=att.created_at,
                last_seen=att.created_at,
                count=1,
            )
        )
        db.flush()
        return
    member.attestation_id = att.id
    member.event = event if isinstance(event, int) else None
    member.last_seen = att.created_at
    member.count += 1


def list_incidents(svc: Services, *, state: TriageState | None = None) -> list[IncidentView]:
    refresh(svc)
    with svc.store.read() as db:
        rows = store_console.list_incidents(db, states=[state] if state else None)
        counts = store_console.member_counts(db, [r.id for r in rows])
        return [IncidentView.of(r, counts.get(r.id, 0)) for r in rows]


def _get(db: Session, incident_id: str | int) -> Incident:
    text = str(incident_id)
    row = (
        db.get(Incident, int(text))
        if text.isascii() and text.isdigit() and len(text) < 18
        else None
    )
    if row is None:
        raise NotFound("incident_unknown", f"no incident {text!r}")
    return row


def show(svc: Services, incident_id: str | int) -> IncidentDetail:
    refresh(svc)
    with svc.store.read() as db:
        row = _get(db, incident_id)
        members = [
            MemberView(name, m.attestation_id, m.event, m.first_seen, m.last_seen, m.count)
            for m, name in store_console.incident_members(db, row.id)
        ]
        notes = [NoteView(n.at, n.actor, n.text) for n in store_console.incident_notes(db, row.id)]
        history = [AuditView.of(e) for e in repo.list_audit(db, target=target(row.id), limit=200)]
        return IncidentDetail(IncidentView.of(row, len(members)), members, notes, history)


def triage(
    svc: Services,
    incident_id: str | int,
    state: TriageState,
    assignee: str | None,
    reason: str,
    actor: str,
) -> IncidentView:
    """Move an incident to ``state`` (and assign it, when ``assignee`` is given), audited."""
    now = svc.now()
    with svc.store.write() as db:
        row = _get(db, incident_id)
        before, before_assignee = row.state, row.assignee
        if state == before and (assignee is None or assignee == before_assignee):
            raise Conflict("incident_unchanged", f"incident {row.id} is already {state}")
        row.state, row.changed_at = state, now
        if assignee is not None:
            row.assignee = assignee[:200]
        details = {"from": before, "to": state, "assignee": row.assignee}
        repo.audit(db, actor, "incident_triage", target(row.id), reason, details, now=now)
        count = store_console.member_counts(db, [row.id]).get(row.id, 0)
        return IncidentView.of(row, count)


def add_note(svc: Services, incident_id: str | int, text: str, actor: str) -> NoteView:
    now = svc.now()
    with svc.store.write() as db:
        row = _get(db, incident_id)
        db.add(IncidentNote(incident_id=row.id, at=now, actor=actor, text=text))
        repo.audit(db, actor, "incident_note", target(row.id), text[:300], now=now)
        return NoteView(now, actor, text)


def of_node(svc: Services, node_name: str) -> list[IncidentView]:
    """The incidents node ``node_name`` is a member of, newest first."""
    refresh(svc)
    with svc.store.read() as db:
        rows = store_console.incidents_of_node(db, node_name)
        counts = store_console.member_counts(db, [r.id for r in rows])
        return [IncidentView.of(r, counts.get(r.id, 0)) for r in rows]


def of_attestation(svc: Services, attestation_id: int) -> list[IncidentView]:
    """The incidents an attestation is the latest member attestation of."""
    with svc.store.read() as db:
        rows = store_console.incidents_of_attestation(db, attestation_id)
        counts = store_console.member_counts(db, [r.id for r in rows])
        return [IncidentView.of(r, counts.get(r.id, 0)) for r in rows]
