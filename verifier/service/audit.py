"""Reading the audit log: who did what, to what, when and why (every change writes one entry in
the transaction of the change; ``repo.audit``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from verifier.store import repo
from verifier.store.models import AuditEntry, iso

from .context import Services


@dataclass(frozen=True, slots=True)
class AuditView:
    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    reason: str
    details: Mapping[str, Any]

    @classmethod
    def of(cls, e: AuditEntry) -> AuditView:
        return cls(e.id, e.at, e.actor, e.action, e.target, e.reason, e.details)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "reason": self.reason,
            "details": self.details,
        }


def entries(svc: Services, *, target: str | None, limit: int) -> list[AuditView]:
    """The newest ``limit`` entries, newest first; only those about ``target`` when given."""
    with svc.store.read() as db:
        return [AuditView.of(e) for e in repo.list_audit(db, target=target, limit=limit)]
