"""The lifecycle shared by versioned policies in the store: golden sets and runtime policies.

Both are versions ``name@version`` with the store's status (draft / active / retired / revoked
with a reason), which overrides the uploaded document's, a label selector, and audit entries for
every change. What differs (how a document is parsed, what a status change re-appraises) stays in
``golden_ops`` and ``runtime_ops``; the views, the printable-text rule and the status transitions
live here once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from assay.errors import MalformedEvidence
from verifier.store.models import iso

from .errors import Conflict

Retirement = Literal["retired", "revoked"]
Transition = Literal["active", "retired", "revoked"]


class VersionRow(Protocol):
    """A stored version (``GoldenSetRow``, ``RuntimePolicyRow``)."""

    name: str
    version: str
    status: str
    reason: str
    format: str
    selector: dict[str, str]
    created_at: dt.datetime
    changed_at: dt.datetime


@dataclass(frozen=True, slots=True)
class VersionView:
    """One stored version, with the store's status (which overrides the document's)."""

    name: str
    version: str
    status: str
    reason: str
    format: str
    selector: Mapping[str, str]
    created_at: dt.datetime
    changed_at: dt.datetime

    @classmethod
    def of(cls, row: VersionRow) -> VersionView:
        return cls(
            row.name,
            row.version,
            row.status,
            row.reason,
            row.format,
            dict(row.selector),
            row.created_at,
            row.changed_at,
        )

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "id": self.ref,
            "status": self.status,
            "reason": self.reason,
            "format": self.format,
            "selector": dict(self.selector),
            "created_at": iso(self.created_at),
            "changed_at": iso(self.changed_at),
        }


@dataclass(frozen=True, slots=True)
class AssignmentView:
    """Every version of ``name`` applies to nodes whose labels match ``selector``; ``key`` is the
    JSON name of the policy field (``golden``, ``policy``)."""

    name: str
    selector: Mapping[str, str]
    key: str = "golden"

    def to_json(self) -> dict[str, Any]:
        return {self.key: self.name, "selector": dict(self.selector)}


@dataclass(frozen=True, slots=True)
class Assigned:
    assignment: AssignmentView
    added: bool
    """False when the same selector was already assigned."""

    def to_json(self) -> dict[str, Any]:
        return {**self.assignment.to_json(), "added": self.added}


def check_printable(texts: Iterable[str], where: str) -> None:
    """The names and selector stored in columns and shown to reviewers must be printable text."""
    if not all(isinstance(t, str) and t.isprintable() for t in texts):
        raise MalformedEvidence(
            "name, version, reason or selector holds control characters or invalid Unicode",
            where=where,
        )


def transition(
    row: VersionRow,
    status: Transition,
    reason: str,
    now: dt.datetime,
    kind: Literal["golden", "runtime"],
) -> None:
    """Move ``row`` to ``status``: a revoked version never comes back, and activation is for
    drafts (a retired version is superseded, never re-activated). The routes require a reason."""
    ref = f"{row.name}@{row.version}"
    if row.status == "revoked":
        if kind == "golden":
            raise Conflict("golden_revoked", f"{ref} is already revoked")
        raise Conflict("runtime_revoked", f"{ref} is already revoked")
    if status == "active" and row.status != "draft":
        raise Conflict("runtime_not_draft", f"{ref} is {row.status}; only a draft is activated")
    row.status, row.reason, row.changed_at = status, reason, now
