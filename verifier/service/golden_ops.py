"""Golden-set lifecycle in the store: upload, list, assign by label selector, retire, revoke.

Revoking re-appraises the latest stored evidence of every node the set applies to, at once, so a
revoked kernel is flagged without waiting for the nodes to reboot or re-attest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from golden.model import GoldenSet
from verifier.store import hotpath, repo
from verifier.store.models import GoldenSetRow

from . import events, reappraisal
from .context import Services
from .errors import BadRequest, Conflict, NotFound
from .golden_policy import GOLDEN_FORMATS, parse_golden
from .lifecycle import (
    Assigned,
    AssignmentView,
    VersionView,
    check_printable,
    transition,
)
from .lifecycle import (
    Retirement as Retirement,  # re-exported: routes name golden_ops.Retirement
)
from .reappraisal import Reappraisal

MAX_GOLDEN = 4 * 1024 * 1024


GoldenView = VersionView
"""One stored version of a golden set (``lifecycle.VersionView``)."""


@dataclass(frozen=True, slots=True)
class GoldenDetail:
    """One version with its source document (YAML as text; None for a CoRIM)."""

    golden: GoldenView
    source: str | None

    def to_json(self) -> dict[str, Any]:
        return {**self.golden.to_json(), "source": self.source}


@dataclass(frozen=True, slots=True)
class GoldenListing:
    golden: list[GoldenView]
    assignments: list[AssignmentView]

    def to_json(self) -> dict[str, Any]:
        return {
            "golden": [g.to_json() for g in self.golden],
            "assignments": [a.to_json() for a in self.assignments],
        }


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A retired or revoked version and the re-appraisals it caused."""

    golden: GoldenView
    reappraised: list[Reappraisal]

    def to_json(self) -> dict[str, Any]:
        return {**self.golden.to_json(), "reappraised": [r.to_json() for r in self.reappraised]}


def upload(svc: Services, fmt: str, data: bytes, actor: str) -> GoldenView:
    if fmt not in GOLDEN_FORMATS:
        raise BadRequest("bad_format", f"golden format must be one of {GOLDEN_FORMATS}")
    if len(data) > MAX_GOLDEN:
        raise BadRequest("too_large", f"golden set larger than {MAX_GOLDEN} bytes")
    gs = parse_golden(fmt, data)
    now = svc.now()
    with svc.store.write() as db:
        return GoldenView.of(insert_version(db, gs, fmt, data, actor, now))


def insert_version(
    db: Session, gs: GoldenSet, fmt: str, data: bytes, actor: str, now: dt.datetime
) -> GoldenSetRow:
    """Store a parsed version (``data`` its source) in ``db``'s transaction, audited; its selector
    is assigned. Conflict if that version exists (upload, and an approved promotion draft)."""
    _check_printable(gs)
    if repo.get_golden(db, gs.name, gs.version) is not None:
        raise Conflict("golden_exists", f"{gs.name}@{gs.version} already exists")
    row = GoldenSetRow(
        name=gs.name,
        version=gs.version,
        status=gs.status,
        reason=gs.status_reason or "",
        format=fmt,
        source=data,
        selector=dict(gs.selector),
        created_at=now,
        changed_at=now,
    )
    db.add(row)
    if gs.selector:
        repo.assign(db, gs.name, gs.selector, now)
    repo.audit(db, actor, "golden_add", f"{gs.name}@{gs.version}", "", now=now)
    hotpath.bump_version(db)  # every instance's golden catalog reloads
    db.flush()
    return row


def _check_printable(gs: GoldenSet) -> None:
    texts = [gs.name, gs.version, gs.status_reason or "", *gs.selector, *gs.selector.values()]
    check_printable(texts, "golden set")


def list_sets(svc: Services) -> GoldenListing:
    with svc.store.read() as db:
        return GoldenListing(
            [GoldenView.of(r) for r in repo.list_golden(db)],
            [AssignmentView(a.golden_name, dict(a.selector)) for a in repo.list_assignments(db)],
        )


def show(svc: Services, name: str, version: str) -> GoldenDetail:
    with svc.store.read() as db:
        row = repo.get_golden(db, name, version)
        if row is None:
            raise NotFound("golden_unknown", f"no golden set {name}@{version}")
        source = row.source.decode("utf-8", "replace") if row.format == "yaml" else None
        return GoldenDetail(GoldenView.of(row), source)


def assign(svc: Services, name: str, selector: Mapping[str, str], actor: str) -> Assigned:
    now = svc.now()
    with svc.store.write() as db:
        if not repo.list_golden(db, name=name):
            raise NotFound("golden_unknown", f"no golden set named {name!r}")
        added = repo.assign(db, name, selector, now)
        hotpath.bump_version(db)
        repo.audit(db, actor, "golden_assign", name, "", {"selector": dict(selector)}, now=now)
    return Assigned(AssignmentView(name, dict(selector)), added)


def set_status(
    svc: Services, name: str, version: str, status: Retirement, reason: str, actor: str
) -> StatusChange:
    """Retire or revoke one version and re-appraise every node it applies to, now: a job of
    batches (``reappraisal.run_job``) created in the transaction of the status change."""
    now = svc.now()
    with svc.store.write() as db:
        row = repo.get_golden(db, name, version)
        if row is None:
            raise NotFound("golden_unknown", f"no golden set {name}@{version}")
        transition(row, status, reason, now, "golden")
        events.golden_status_changed(db, name, version, status, reason, now=now)
        hotpath.bump_version(db)  # every instance's golden catalog reloads
        repo.audit(
            db, actor, f"golden_{status.removesuffix('d')}", f"{name}@{version}", reason, now=now
        )
        view = GoldenView.of(row)
        why = f"{name}@{version} {status}: {reason}"
        job_id, held = reappraisal.start_job(db, name, why, actor, svc.holder, now)
    # Batches of nodes, one transaction each; another instance finishes it if this one dies.
    return StatusChange(view, reappraisal.run_job(svc, job_id, held))


@dataclass(frozen=True, slots=True)
class CanaryChange:
    golden: GoldenView
    canary: Mapping[str, str] | None
    reappraised: list[Reappraisal]

    def to_json(self) -> dict[str, Any]:
        return {
            "golden": self.golden.to_json(),
            "canary": None if self.canary is None else dict(self.canary),
            "reappraised": [r.to_json() for r in self.reappraised],
        }


def set_canary(
    svc: Services, name: str, version: str, selector: Mapping[str, str] | None, actor: str
) -> CanaryChange:
    """Limit ``name@version`` to the nodes of its set that match ``selector`` (a canary during a
    rollout), or with None let it apply to every node of the set; the set's nodes are re-appraised
    at once, since which versions apply to them changed."""
    if selector is not None and not selector:
        raise BadRequest("bad_selector", "a canary selector needs at least one label")
    now = svc.now()
    with svc.store.write() as db:
        row = repo.get_golden(db, name, version)
        if row is None:
            raise NotFound("golden_unknown", f"no golden set {name}@{version}")
        row.canary = None if selector is None else dict(selector)
        row.changed_at = now
        hotpath.bump_version(db)  # which versions apply changed: every catalog reloads
        detail = {"canary": row.canary}
        repo.audit(db, actor, "golden_canary", f"{name}@{version}", "", detail, now=now)
        assignments = repo.list_assignments(db)
        affected = [
            n.name
            for n in repo.list_nodes(db)
            if name in repo.golden_names_for(n.labels, assignments)
        ]
        view, canary = GoldenView.of(row), row.canary
    why = f"{name}@{version} canary: " + (
        ",".join(f"{k}={v}" for k, v in (canary or {}).items()) or "every node"
    )
    return CanaryChange(
        view, canary, reappraisal.reappraise_nodes(svc, affected, why, actor) if affected else []
    )
