"""Every instance's in-process copy of the golden sets and assignments, invalidated by version.

Each golden-set change (upload, assignment, retire, revoke, canary) bumps ``store_versions.golden`` in
its own transaction (``hotpath.bump_version``). An attestation reads that one integer; while it
is unchanged, the rows and the label → rows selection come from here, so a golden change made by
any instance applies to the next attestation on every other, and an unchanged fleet reads no
golden rows at all.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from verifier.store import hotpath, repo
from verifier.store.models import Assignment, GoldenSetRow

MAX_SELECTIONS = 4096
"""Distinct label sets remembered per version (more are recomputed, never wrong)."""


@dataclass(frozen=True, slots=True)
class GoldenRow:
    """A stored golden version as read at one store version (the store's status included)."""

    id: int
    name: str
    version: str
    status: str
    reason: str
    format: str
    source: bytes
    canary: Mapping[str, str] | None = None
    """A canary version applies only to the nodes whose labels also match this."""


class GoldenCatalog:
    """Golden rows and assignments as of the store's golden version (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = -1
        self._rows: tuple[GoldenRow, ...] = ()
        self._assignments: tuple[tuple[str, Mapping[str, str]], ...] = ()
        self._selected: dict[tuple[tuple[str, str], ...], list[GoldenRow]] = {}
        self.reloads = 0

    @property
    def version(self) -> int:
        """The store version the rows are of (-1 before the first load)."""
        return self._version

    def rows_for(
        self, db: Session, labels: Mapping[str, str], version: int | None = None
    ) -> list[GoldenRow]:
        """Every stored version (any status) of every set assigned to nodes with ``labels``;
        ``version``: the store's golden version when the caller read it already (same ``db``)."""
        if version is None:
            version = hotpath.golden_version(db)
        with self._lock:
            if version != self._version:
                self._load(db, version)
            key = tuple(sorted(labels.items()))
            rows = self._selected.get(key)
            if rows is None:
                names = {g for g, sel in self._assignments if repo.selector_matches(sel, labels)}
                rows = [
                    r
                    for r in self._rows
                    if r.name in names
                    and (r.canary is None or repo.selector_matches(r.canary, labels))
                ]
                if len(self._selected) >= MAX_SELECTIONS:
                    self._selected.clear()
                self._selected[key] = rows
            return rows

    def _load(self, db: Session, version: int) -> None:
        golden = db.execute(
            select(
                GoldenSetRow.id,
                GoldenSetRow.name,
                GoldenSetRow.version,
                GoldenSetRow.status,
                GoldenSetRow.reason,
                GoldenSetRow.format,
                GoldenSetRow.source,
                GoldenSetRow.canary,
            ).order_by(GoldenSetRow.id)
        )
        self._rows = tuple(
            GoldenRow(*r[:7], None if r.canary is None else dict(r.canary)) for r in golden
        )
        assigned = db.execute(
            select(Assignment.golden_name, Assignment.selector).order_by(Assignment.id)
        )
        self._assignments = tuple((name, dict(sel)) for name, sel in assigned)
        self._selected = {}
        self._version = version
        self.reloads += 1


class RuntimeCatalog(GoldenCatalog):
    """The runtime policies and their assignments, the same way: invalidated by the same store
    version (every runtime-policy change bumps it too, ``runtime_ops``), so an attestation of an
    unchanged fleet reads no runtime-policy rows either."""

    def in_use(self, db: Session, version: int | None = None) -> bool:
        """Whether any runtime policy is stored (then every quote must cover PCR10)."""
        if version is None:
            version = hotpath.golden_version(db)
        with self._lock:
            if version != self._version:
                self._load(db, version)
            return bool(self._rows)

    def _load(self, db: Session, version: int) -> None:
        from verifier.store.runtime import RuntimeAssignment, RuntimePolicyRow

        rows = db.execute(
            select(
                RuntimePolicyRow.id,
                RuntimePolicyRow.name,
                RuntimePolicyRow.version,
                RuntimePolicyRow.status,
                RuntimePolicyRow.reason,
                RuntimePolicyRow.format,
                RuntimePolicyRow.source,
            ).order_by(RuntimePolicyRow.id)
        )
        self._rows = tuple(GoldenRow(*r) for r in rows)
        assigned = db.execute(
            select(RuntimeAssignment.policy_name, RuntimeAssignment.selector).order_by(
                RuntimeAssignment.id
            )
        )
        self._assignments = tuple((name, dict(sel)) for name, sel in assigned)
        self._selected = {}
        self._version = version
        self.reloads += 1
