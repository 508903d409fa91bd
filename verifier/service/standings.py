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

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from verifier.store import cluster
from verifier.store.models import Node, NodeState

from .context import Services

_CODE = re.compile(r"([a-z][a-z0-9_]*):")
FULL_RELOAD = 60.0
MAX_TOUCHED = 5000
"""More events than this since the last look: reload everything instead."""


UNKNOWN = "unknown to Assay: never attested"
STALE = "stale: no successful attestation within the freshness window"


@dataclass(frozen=True, slots=True)
class Standing:
    state: NodeState
    reason: str
    fresh_until: float
    """Epoch seconds when a trusted node turns stale (last success or enrolment + window)."""

    def why_not(self) -> str:
        """The state and the reason's stable code only: the extender takes no token, so it never
        shows the approved values a reviewer's message may quote."""
        match = _CODE.match(self.reason)
        return f"{self.state}: {match.group(1)}" if match else str(self.state)


_COLUMNS = (Node.name, Node.state, Node.reason, Node.last_success_at, Node.enrolled_at)


def _standing(row: Any, w: float) -> Standing:
    _, state, reason, success, enrolled = row
    return Standing(state, reason, (success or enrolled).timestamp() + w)


class Standings:
    """One process's map; ``refresh`` before reading. ``fresh_until`` holds trusted nodes only,
    ``why`` every other node's refusal, so judging a name is two dictionary look-ups."""

    def __init__(self) -> None:
        self.fresh_until: dict[str, float] = {}
        self.why: dict[str, str] = {}
        self.seq = -1
        self.loaded_at = -1e18
        self._set: frozenset[str] | None = None
        self._earliest = float("inf")
        self._why_now: dict[str, str] = {}

    def _put(self, name: str, st: Standing) -> None:
        if st.state == NodeState.TRUSTED:
            self.fresh_until[name] = st.fresh_until
        else:
            self.why[name] = st.why_not()

    def _drop(self, name: str) -> None:
        self.fresh_until.pop(name, None)
        self.why.pop(name, None)

    def refresh(self, svc: Services) -> None:
        window = svc.config.freshness_window
        mono = svc.monotonic()
        with svc.store.read() as db:
            # Up to where every event is visible (writers may commit out of seq order).
            last = cluster.settled_seq(db, svc.now())
            if last == self.seq and mono - self.loaded_at < FULL_RELOAD:
                return
            touched: set[str] | None = None
            if self.seq >= 0 and last > self.seq and mono - self.loaded_at < FULL_RELOAD:
                events = cluster.events_after(db, self.seq, limit=MAX_TOUCHED + 1)
                if len(events) <= MAX_TOUCHED:
                    touched = {e.node for e in events if e.node and e.seq <= last}
            query = select(*_COLUMNS)
            if touched is not None:
                query = query.where(Node.name.in_(touched))
            rows = db.execute(query).all()
        if touched is None:
            self.fresh_until, self.why = {}, {}
            self.loaded_at = mono
        for name in touched or ():
            self._drop(name)
        for row in rows:
            self._put(row[0], _standing(row, window))
        self.seq = last
        self._set = None  # the schedulable set is rebuilt on the next judgement

    def _schedulable(self, now: float) -> frozenset[str]:
        """The trusted names still fresh at ``now``: rebuilt only when one of them expires."""
        if self._set is None or now > self._earliest:
            alive = {n: t for n, t in self.fresh_until.items() if now <= t}
            self._set = frozenset(alive)
            self._earliest = min(alive.values(), default=float("inf"))
            expired = {n: STALE for n in self.fresh_until if n not in alive}
            self._why_now = {**self.why, **expired}
        return self._set

    def judge(self, names: Sequence[str], now: float) -> tuple[list[int], dict[str, str]]:
        """(indices of the names that may be scheduled, {name: why not} for the others)."""
        ok = self._schedulable(now)
        passed = [i for i, name in enumerate(names) if name in ok]
        if len(passed) == len(names):
            return passed, {}
        why = self._why_now.get
        failed = {name: why(name, UNKNOWN) for name in names if name not in ok}
        return passed, failed


def standings(svc: Services) -> Standings:
    found = svc.extensions.get("standings")
    if not isinstance(found, Standings):
        found = svc.extensions["standings"] = Standings()
    found.refresh(svc)
    return found
