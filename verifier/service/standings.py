"""Every node's standing in one process's memory, kept current from the change feed.

The scheduler extender answers for thousands of node names per pod, within milliseconds, so it
cannot read the fleet per request. Each worker keeps ``name → (state, reason, last success)``
and, per request, asks the database one indexed question — the feed's newest ``seq`` — reloading
only the nodes named by the events since (a full reload every ``FULL_RELOAD`` s as a backstop).
Staleness is computed at the moment of asking from the last successful quote, so a node that
falls silent fails the filter the second its window ends, without any event.

Fail closed: a node that is not in the map (unknown to Assay, or deleted) is never passed, and a
database that cannot be read fails the request (the caller answers with an error).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from verifier.store import cluster
from verifier.store.models import Node, NodeState

from .context import Services

FULL_RELOAD = 60.0
MAX_TOUCHED = 5000
"""More events than this since the last look: reload everything instead."""


@dataclass(frozen=True, slots=True)
class Standing:
    state: NodeState
    reason: str
    fresh_until: float
    """Epoch seconds when a trusted node turns stale (last success or enrolment + window)."""

    def verdict(self, now: float) -> tuple[bool, str]:
        """(schedulable, why not)."""
        if self.state == NodeState.TRUSTED:
            if now <= self.fresh_until:
                return True, ""
            return False, "stale: no successful attestation within the freshness window"
        return False, f"{self.state}: {self.reason}"[:300]


_COLUMNS = (Node.name, Node.state, Node.reason, Node.last_success_at, Node.enrolled_at)


def _standing(
    row: tuple[str, NodeState, str, dt.datetime | None, dt.datetime], w: float
) -> Standing:
    _, state, reason, success, enrolled = row
    return Standing(state, reason, (success or enrolled).timestamp() + w)


class Standings:
    """One process's map; ``refresh`` before reading."""

    def __init__(self) -> None:
        self.by_name: dict[str, Standing] = {}
        self.seq = -1
        self.loaded_at = -1e18

    def refresh(self, svc: Services) -> None:
        window = svc.config.freshness_window
        mono = svc.monotonic()
        with svc.store.read() as db:
            last = cluster.last_seq(db)
            if last == self.seq and mono - self.loaded_at < FULL_RELOAD:
                return
            touched: set[str] | None = None
            if self.seq >= 0 and last > self.seq and mono - self.loaded_at < FULL_RELOAD:
                events = cluster.events_after(db, self.seq, limit=MAX_TOUCHED + 1)
                if len(events) <= MAX_TOUCHED:
                    touched = {e.node for e in events if e.node}
            if touched is None:
                rows = db.execute(select(*_COLUMNS)).all()
                self.by_name = {r[0]: _standing(r.tuple(), window) for r in rows}
                self.loaded_at = mono
            else:
                rows = db.execute(select(*_COLUMNS).where(Node.name.in_(touched))).all()
                fresh = {r[0]: _standing(r.tuple(), window) for r in rows}
                merged = dict(self.by_name)
                for name in touched:
                    merged.pop(name, None)
                merged.update(fresh)
                self.by_name = merged
            self.seq = last

    def get(self, name: str) -> Standing | None:
        return self.by_name.get(name)


def standings(svc: Services) -> Standings:
    found = svc.extensions.get("standings")
    if not isinstance(found, Standings):
        found = svc.extensions["standings"] = Standings()
    found.refresh(svc)
    return found
