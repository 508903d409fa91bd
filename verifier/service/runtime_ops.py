"""Runtime-policy lifecycle in the store: upload, list, show, assign by label selector, activate,
retire, revoke — the golden sets' lifecycle (``lifecycle``) for IMA runtime policies.

A status change re-appraises every node the policy applies to, at once (a job of batches,
``reappraisal.run_job``, created in the status change's transaction): the IMA prefix a node's
last verdict was judged on was judged by other policies, so its runtime checks become
``ima_policy_changed`` (unknown) until the node's next attestation sends its full list, which is
judged under the policies now in force. A node leaves ``trusted`` the moment a policy it relied on
is revoked, without waiting for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from golden.runtime import RuntimePolicy
from verifier.store import hotpath, repo
from verifier.store import runtime as rstore

from .context import Services
from .errors import BadRequest, Conflict, NotFound
from .lifecycle import (
    Assigned,
    AssignmentView,
    Transition,
    VersionView,
    check_printable,
    transition,
)
from .reappraisal import RUNTIME, Reappraisal, run_job, start_job
from .runtime_policy import parse_runtime

MAX_RUNTIME = 16 * 1024 * 1024
"""A runtime policy built from a distribution's packages holds tens of thousands of paths."""


@dataclass(frozen=True, slots=True)
class RuntimeDetail:
    """One version with its source document (YAML as text)."""

    policy: VersionView
    source: str

    def to_json(self) -> dict[str, Any]:
        return {**self.policy.to_json(), "source": self.source}


@dataclass(frozen=True, slots=True)
class RuntimeListing:
    policies: list[VersionView]
    assignments: list[AssignmentView]

    def to_json(self) -> dict[str, Any]:
        return {
            "policies": [p.to_json() for p in self.policies],
            "assignments": [a.to_json() for a in self.assignments],
        }


@dataclass(frozen=True, slots=True)
class RuntimeStatusChange:
    """An activated, retired or revoked version and the re-appraisals it caused."""

    policy: VersionView
    reappraised: list[Reappraisal]

    def to_json(self) -> dict[str, Any]:
        return {**self.policy.to_json(), "reappraised": [r.to_json() for r in self.reappraised]}


def upload(
    svc: Services, data: bytes, actor: str, selector: Mapping[str, str] | None = None
) -> VersionView:
    """Store a new version (its status as the document says: draft or active); ``selector``
    assigns the policy to nodes matching it in the same transaction."""
    if len(data) > MAX_RUNTIME:
        raise BadRequest("too_large", f"runtime policy larger than {MAX_RUNTIME} bytes")
    policy = parse_runtime(data)
    _check_printable(policy, selector or {})
    if policy.status in ("retired", "revoked"):
        raise BadRequest("bad_status", "a new runtime policy is uploaded as draft or active")
    now = svc.now()
    with svc.store.write() as db:
        if rstore.get_policy(db, policy.name, policy.version) is not None:
            raise Conflict("runtime_exists", f"{policy.ref} already exists")
        row = rstore.RuntimePolicyRow(
            name=policy.name,
            version=policy.version,
            status=policy.status,
            reason="",
            format="yaml",
            source=data,
            selector=dict(selector or {}),
            created_at=now,
            changed_at=now,
        )
        db.add(row)
        if selector:
            rstore.assign(db, policy.name, selector, now)
        repo.audit(db, actor, "runtime_add", policy.ref, "", {"status": policy.status}, now=now)
        hotpath.bump_version(db)  # every instance's runtime catalog reloads
        db.flush()
        return VersionView.of(row)


def _check_printable(p: RuntimePolicy, selector: Mapping[str, str]) -> None:
    check_printable([p.name, p.version, *selector, *selector.values()], "runtime policy")


def list_policies(svc: Services) -> RuntimeListing:
    with svc.store.read() as db:
        return RuntimeListing(
            [VersionView.of(r) for r in rstore.list_policies(db)],
            [
                AssignmentView(a.policy_name, dict(a.selector), "policy")
                for a in rstore.list_assignments(db)
            ],
        )


def show(svc: Services, name: str, version: str) -> RuntimeDetail:
    with svc.store.read() as db:
        row = _get(db, name, version)
        return RuntimeDetail(VersionView.of(row), row.source.decode("utf-8", "replace"))


def _get(db: Session, name: str, version: str) -> rstore.RuntimePolicyRow:
    row = rstore.get_policy(db, name, version)
    if row is None:
        raise NotFound("runtime_unknown", f"no runtime policy {name}@{version}")
    return row


def assign(svc: Services, name: str, selector: Mapping[str, str], actor: str) -> Assigned:
    """Apply every version of ``name`` to nodes matching ``selector`` (an empty one: every node)."""
    check_printable([*selector, *selector.values()], "runtime policy selector")
    now = svc.now()
    with svc.store.write() as db:
        if not rstore.list_policies(db, name=name):
            raise NotFound("runtime_unknown", f"no runtime policy named {name!r}")
        added = rstore.assign(db, name, selector, now)
        hotpath.bump_version(db)
        repo.audit(db, actor, "runtime_assign", name, "", {"selector": dict(selector)}, now=now)
    return Assigned(AssignmentView(name, dict(selector), "policy"), added)


def set_status(
    svc: Services, name: str, version: str, status: Transition, reason: str, actor: str
) -> RuntimeStatusChange:
    """Activate a draft, or retire or revoke a version; every node the policy applies to is
    re-appraised at once (see the module docstring)."""
    check_printable([reason], "runtime policy reason")
    now = svc.now()
    with svc.store.write() as db:
        row = _get(db, name, version)
        transition(row, status, reason, now, "runtime")
        hotpath.bump_version(db)
        action = {"active": "runtime_activate", "retired": "runtime_retire"}.get(
            status, "runtime_revoke"
        )
        repo.audit(db, actor, action, f"{name}@{version}", reason, now=now)
        view = VersionView.of(row)
        why = f"runtime policy {name}@{version} {status}: {reason}"
        job_id, held = start_job(db, name, why, actor, svc.holder, now, kind=RUNTIME)
    # Batches of nodes, one transaction each; another instance finishes it if this one dies.
    return RuntimeStatusChange(view, run_job(svc, job_id, held))
