"""Staged rollouts: which golden version each node booted, which are outdated, canary versions.

A node's booted versions come from its last appraisal (``booted_versions``: the versions whose
values its verified log matched), never from its labels. A booted version is *outdated* when it is
revoked or retired, or when a newer active version of the same set (uploaded later) applies to the
node: the node should roll forward. A canary version applies only to the nodes of its set's
assignment that also match its canary selector (``golden_rows_for``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from verifier.store import repo
from verifier.store.models import GoldenSetRow, Node

from .context import Services
from .errors import NotFound


@dataclass(frozen=True, slots=True)
class Outdated:
    """A booted version the node should leave, and why: ``revoked``, ``retired`` or
    ``superseded`` (``by`` a newer active version that applies to the node)."""

    version: str
    why: str
    by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "why": self.why, "by": self.by}


class Standing:
    """Every stored golden version by set name (upload order), read once per request."""

    def __init__(self, rows: Sequence[GoldenSetRow]) -> None:
        self.by_name: dict[str, list[GoldenSetRow]] = {}
        for row in sorted(rows, key=lambda r: r.id):
            self.by_name.setdefault(row.name, []).append(row)

    def outdated(self, booted: Sequence[str], labels: Mapping[str, str]) -> tuple[Outdated, ...]:
        out: list[Outdated] = []
        for ref in booted:
            name, _, version = ref.rpartition("@")
            rows = self.by_name.get(name, [])
            row = next((r for r in rows if r.version == version), None)
            if row is None:
                continue  # deleted since: nothing to compare with
            if row.status in ("revoked", "retired"):
                out.append(Outdated(ref, row.status))
                continue
            newer = [
                r
                for r in rows
                if r.id > row.id
                and r.status == "active"
                and (r.canary is None or repo.selector_matches(r.canary, labels))
            ]
            if newer:
                out.append(Outdated(ref, "superseded", f"{name}@{newer[-1].version}"))
        return tuple(out)


def standing(svc: Services) -> Standing:
    with svc.store.read() as db:
        return Standing(repo.list_golden(db))


@dataclass(frozen=True, slots=True)
class VersionRollout:
    version: str
    status: str
    reason: str
    canary: Mapping[str, str] | None
    uploaded_at: dt.datetime
    nodes: tuple[str, ...]  # the nodes whose last appraisal matched this version

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "status": self.status,
            "reason": self.reason,
            "canary": None if self.canary is None else dict(self.canary),
            "uploaded_at": self.uploaded_at.isoformat().replace("+00:00", "Z"),
            "nodes": len(self.nodes),
            "node_names": list(self.nodes),
        }


@dataclass(frozen=True, slots=True)
class Rollout:
    """One golden set's versions, oldest first, with the nodes booting each."""

    name: str
    versions: tuple[VersionRollout, ...]
    active: tuple[str, ...]
    elsewhere: tuple[str, ...]  # nodes the set applies to that booted none of its versions

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "active": list(self.active),
            "versions": [v.to_json() for v in self.versions],
            "nodes_on_no_version": list(self.elsewhere),
        }


def rollout(svc: Services, name: str) -> Rollout:
    """The rollout state of golden set ``name``: versions, which nodes booted which."""
    with svc.store.read() as db:
        rows = repo.list_golden(db, name=name)
        if not rows:
            raise NotFound("golden_unknown", f"no golden set named {name!r}")
        assignments = repo.list_assignments(db)
        nodes = [
            n for n in repo.list_nodes(db) if name in repo.golden_names_for(n.labels, assignments)
        ]
    return Rollout(
        name,
        tuple(_version(r, nodes) for r in rows),
        tuple(r.version for r in rows if r.status == "active"),
        tuple(
            n.name for n in nodes if not any(b.startswith(name + "@") for b in n.booted_versions)
        ),
    )


def _version(row: GoldenSetRow, nodes: Sequence[Node]) -> VersionRollout:
    ref = f"{row.name}@{row.version}"
    return VersionRollout(
        row.version,
        row.status,
        row.reason,
        row.canary,
        row.created_at,
        tuple(n.name for n in nodes if ref in n.booted_versions),
    )
