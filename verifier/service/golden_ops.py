"""Golden-set lifecycle in the store: upload, list, assign by label selector, retire, revoke.

Revoking re-appraises the latest stored evidence of every node the set applies to, at once, so a
revoked kernel is flagged without waiting for the nodes to reboot or re-attest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from assay.errors import MalformedEvidence
from golden.model import GoldenSet
from verifier.store import repo
from verifier.store.models import GoldenSetRow

from .context import Services
from .errors import bad_request, conflict, not_found
from .golden_policy import GOLDEN_FORMATS, parse_golden
from .inventory import _iso, reappraise_nodes

MAX_GOLDEN = 4 * 1024 * 1024


def golden_json(row: GoldenSetRow, *, source: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": row.name,
        "version": row.version,
        "id": f"{row.name}@{row.version}",
        "status": row.status,
        "reason": row.reason,
        "format": row.format,
        "selector": row.selector,
        "created_at": _iso(row.created_at),
        "changed_at": _iso(row.changed_at),
    }
    if source:
        out["source"] = row.source.decode("utf-8", "replace") if row.format == "yaml" else None
    return out


def upload(svc: Services, fmt: str, data: bytes, actor: str) -> dict[str, Any]:
    if fmt not in GOLDEN_FORMATS:
        raise bad_request("bad_format", f"golden format must be one of {GOLDEN_FORMATS}")
    if len(data) > MAX_GOLDEN:
        raise bad_request("too_large", f"golden set larger than {MAX_GOLDEN} bytes")
    gs = parse_golden(fmt, data)
    _check_printable(gs)
    now = svc.now()
    with svc.store.write() as db:
        if repo.get_golden(db, gs.name, gs.version) is not None:
            raise conflict("golden_exists", f"{gs.name}@{gs.version} already exists")
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
        db.flush()
        return golden_json(row)


def _check_printable(gs: GoldenSet) -> None:
    """The names and selector stored in columns and shown to reviewers must be printable text."""
    texts = [gs.name, gs.version, gs.status_reason or "", *gs.selector, *gs.selector.values()]
    if not all(isinstance(t, str) and t.isprintable() for t in texts):
        raise MalformedEvidence(
            "name, version, reason or selector holds control characters or invalid Unicode",
            where="golden set",
        )


def list_sets(svc: Services) -> dict[str, Any]:
    with svc.store.read() as db:
        return {
            "golden": [golden_json(r) for r in repo.list_golden(db)],
            "assignments": [
                {"golden": a.golden_name, "selector": a.selector} for a in repo.list_assignments(db)
            ],
        }


def show(svc: Services, name: str, version: str) -> dict[str, Any]:
    with svc.store.read() as db:
        row = repo.get_golden(db, name, version)
        if row is None:
            raise not_found("golden_unknown", f"no golden set {name}@{version}")
        return golden_json(row, source=True)


def assign(svc: Services, name: str, selector: Mapping[str, str], actor: str) -> dict[str, Any]:
    now = svc.now()
    with svc.store.write() as db:
        if not repo.list_golden(db, name=name):
            raise not_found("golden_unknown", f"no golden set named {name!r}")
        added = repo.assign(db, name, selector, now)
        repo.audit(db, actor, "golden_assign", name, "", {"selector": dict(selector)}, now=now)
    return {"golden": name, "selector": dict(selector), "added": added}


def set_status(
    svc: Services, name: str, version: str, status: str, reason: str, actor: str
) -> dict[str, Any]:
    """Retire or revoke one version; a revocation re-appraises every affected node at once."""
    now = svc.now()
    with svc.store.write() as db:
        row = repo.get_golden(db, name, version)
        if row is None:
            raise not_found("golden_unknown", f"no golden set {name}@{version}")
        if row.status == "revoked":
            raise conflict("golden_revoked", f"{name}@{version} is already revoked")
        row.status, row.reason, row.changed_at = status, reason, now
        repo.audit(
            db, actor, f"golden_{status.removesuffix('d')}", f"{name}@{version}", reason, now=now
        )
        assignments = repo.list_assignments(db)
        affected = [
            n.name
            for n in repo.list_nodes(db)
            if name in repo.golden_names_for(n.labels, assignments)
        ]
    out = golden_json(row)
    out["reappraised"] = (
        reappraise_nodes(svc, affected, f"{name}@{version} {status}: {reason}", actor)
        if affected
        else []
    )
    return out
