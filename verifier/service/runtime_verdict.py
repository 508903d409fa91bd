"""Runtime checks in the same verdict as the boot checks.

``runtime_for`` reads what the runtime step needs for one node (its runtime policies, compiled
once per set of versions, and its stored IMA prefix); ``appraise_ima`` runs the step on the
evidence; ``combine`` puts the runtime checks after the boot checks in one ``Assessment``:

- a node no runtime policy applies to keeps its boot verdict exactly (nothing added);
- a node one applies to is trusted only when the boot and every runtime check pass; with no IMA
  list, or PCR10 unquoted, it is ``unknown`` (absent measurement is never approval); a failing
  runtime check makes it ``untrusted``;
- the reason is the boot's when the boot is not trusted, else the first failing (then unknown)
  runtime check's — so a runtime reason code always means the boot itself passed (the EAR
  ``runtime`` submodule relies on it).

A re-appraisal (no new evidence) has no IMA list: ``reassess`` reuses the checks the node's
stored prefix carries when they were judged by the policies in force now, and otherwise says
``ima_policy_changed`` (unknown) until the node's next attestation sends its full list.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from assay.evidence import Evidence
from assay.tpm2 import VerifiedQuote
from verifier.appraisal import CheckStatus, VerdictStatus
from verifier.store import runtime as rstore

from .context import Services
from .golden_policy import Assessment
from .runtime_attest import (
    ImaChunk,
    RuntimeOutcome,
    StoredPrefix,
    no_ima_log,
    prefix_of,
    runtime_step,
)
from .runtime_policy import NodeRuntime, compiled_runtime


@dataclass(frozen=True, slots=True)
class NodeRuntimeInputs:
    """One node's runtime policies and stored prefix, read in the attestation's read."""

    runtime: NodeRuntime
    applies: bool
    prior: StoredPrefix | None


def runtime_for(
    svc: Services,
    db: Session,
    node_id: int,
    labels: Any,
    *,
    prefix: bool = True,
    version: int | None = None,
) -> NodeRuntimeInputs:
    """The node's runtime policies (from the catalog, by the store version ``version`` when the
    caller read it) and, with ``prefix``, its stored prefix (needed only for an IMA list)."""
    rows = svc.runtime.rows_for(db, labels, version)
    prior = prefix_of(rstore.get_ima_state(db, node_id)) if prefix else None
    return NodeRuntimeInputs(compiled_runtime(svc, rows), bool(rows), prior)


def verdict_key_with(key: str, runtime: RuntimeOutcome | None) -> str:
    """The verdict key (``reuse.verdict_key``) with this attestation's runtime checks in it: a
    stored verdict is reused only when its runtime part is what was judged now, too."""
    if runtime is None or not runtime.applies:
        return key
    text = json.dumps([key, runtime.policies, runtime.checks], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def appraise_ima(
    svc: Services, ev: Evidence, quote: VerifiedQuote, inputs: NodeRuntimeInputs
) -> RuntimeOutcome | None:
    """The runtime step for a verified quote (None: no IMA list and no policy: nothing to do).
    Raises Conflict ``ima_full_log_required`` for a chunk the verifier cannot continue."""
    if ev.ima_log is None:
        return no_ima_log(inputs.runtime) if inputs.applies else None
    chunk = ImaChunk(ev.ima_log, ev.ima_start, ev.ima_offset)
    return runtime_step(
        inputs.prior, chunk, quote, svc.config.hash_alg, inputs.runtime, applies=inputs.applies
    )


def _worst(boot: VerdictStatus, checks: list[dict[str, Any]]) -> VerdictStatus:
    if boot == VerdictStatus.UNTRUSTED or any(c["status"] == CheckStatus.FAIL for c in checks):
        return VerdictStatus.UNTRUSTED
    if boot == VerdictStatus.UNKNOWN or any(c["status"] != CheckStatus.PASS for c in checks):
        return VerdictStatus.UNKNOWN
    return VerdictStatus.TRUSTED


def _runtime_reason(checks: list[dict[str, Any]]) -> str | None:
    for wanted in (CheckStatus.FAIL, CheckStatus.UNKNOWN):
        for c in checks:
            if c["status"] == wanted:
                return f"{c['reason']}: {c['message']}"
    return None


def combine(boot: Assessment, runtime: RuntimeOutcome | None) -> Assessment:
    """The verdict with the runtime checks after the boot checks (see the module docstring)."""
    if runtime is None or not runtime.applies:
        return boot
    checks = [*boot.checks, *runtime.checks]
    status = _worst(boot.status, runtime.checks)
    reason = boot.reason
    if boot.status == VerdictStatus.TRUSTED:
        reason = _runtime_reason(runtime.checks) or f"all {len(checks)} checks passed"
    verdict = {
        **boot.verdict,
        "status": status,
        "reason": reason,
        "checks": checks,
        "runtime": {
            "policies": list(runtime.policies),
            "judged": runtime.judged,
            "unquoted": runtime.unquoted,
            "next": list(runtime.cursor),
        },
    }
    return replace(boot, status=status, reason=reason, checks=checks, verdict=verdict)


def reassess(svc: Services, db: Session, node_id: int, labels: Any, boot: Assessment) -> Assessment:
    """A re-appraisal's runtime part, from the stored prefix (no IMA list is stored)."""
    inputs = runtime_for(svc, db, node_id, labels)
    if not inputs.applies:
        return boot
    prior = inputs.prior
    refs = inputs.runtime.refs
    if prior is not None and prior.policy_key == inputs.runtime.key:
        checks = [dict(c) for c in prior.carried]
        ok = prior.failed == 0 and all(c["status"] == CheckStatus.PASS for c in checks)
        checks.append(_summary(prior, refs, ok))
        keep = RuntimeOutcome(
            True, checks, refs, prior, (prior.replay.entries, prior.replay.offset)
        )
        return combine(boot, keep)
    why = (
        "the runtime policies changed since this node's IMA list was judged; its next "
        "attestation sends the full list"
        if prior is not None
        else "no IMA list of this boot has been judged; the node's next attestation sends it"
    )
    check = {
        "id": "ima.policy",
        "status": CheckStatus.UNKNOWN,
        "reason": "ima_policy_changed",
        "pcr": None,
        "event": None,
        "got": None,
        "expected": None,
        "golden": ", ".join(refs) or None,
        "message": why,
    }
    return combine(boot, RuntimeOutcome(True, [check], refs, None, (0, 0)))


def _summary(prior: StoredPrefix, refs: tuple[str, ...], ok: bool) -> dict[str, Any]:
    total = prior.replay.entries
    return {
        "id": "ima.entries",
        "status": CheckStatus.PASS if ok else CheckStatus.FAIL,
        "reason": "ima_entries_approved" if ok else "ima_entries_not_approved",
        "pcr": None,
        "event": None,
        "got": None,
        "expected": None,
        "golden": ", ".join(refs),
        "message": f"{prior.approved} of {total} IMA entries of this boot approved by "
        f"{', '.join(refs)}"
        + (f"; {prior.failed} not" if prior.failed else "")
        + " (re-appraised from the verified prefix)",
    }
