"""Promote a reviewed measurement into a NEW golden version, with four eyes.

``draft`` (steps labelled in the code):
 1. the attestation's stored evidence verifies again (quote with the node's enrolled AK, log
    replayed against it): only measurements a TPM quoted can be promoted;
 2. every selected event is one a failing check names, with a reason that says "not approved"
    (never a revoked or retired value: a revocation is undone only by a new upload, by hand);
 3. the base is an active version the attestation was appraised against;
 4. the draft is the base plus those measurements, each where the appraisal looks for it (a boot
    application, a driver, a command line, an initrd, a MokList entry, or a digest approved for
    its PCR), under a new version, with its provenance (attestation, events, drafter) in the
    description — stored as a draft, not in force, audited.
``approve``: someone else (another token, not one the drafter created) turns the draft into an
active version and re-appraises every node the set applies to at once. ``reject`` keeps the draft
with its reason.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from assay.algorithms import HashAlg
from assay.bootfacts import where
from assay.eventlog import Event, VerifiedBootLog
from golden.model import BootApp, CmdlineRule, GoldenSet, Measured, Role, Shim, digests
from golden.yamlfmt import dump_yaml
from verifier.store import console as store_console
from verifier.store import hotpath, repo
from verifier.store.models import DraftState, GoldenDraft, iso

from . import golden_ops, stored_log
from .attestation import find_attestation
from .context import Services
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .golden_policy import golden_from_row, parse_golden
from .inventory import Reappraisal
from .reappraisal import run_job, start_job
from .tokens import Caller

PROMOTABLE = {
    "boot_app_not_approved": "boot_app",
    "cmdline_not_approved": "cmdline",
    "initrd_not_approved": "initrd",
    "firmware_blob_not_approved": "firmware_blob",
    "moklist_not_approved": "moklist",
    "event_not_accounted": "measurement",
}
"""Failing reasons a reviewed measurement may answer, and where the draft puts it."""
MAX_EVENTS = 64


@dataclass(frozen=True, slots=True)
class Candidate:
    """An event a failing check names, and what promoting it would add (or why it cannot)."""

    event: int
    pcr: int
    check: str
    reason: str
    kind: str | None
    value: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class DraftView:
    id: int
    golden: str
    base_version: str
    version: str
    attestation_id: int
    node: str
    events: tuple[int, ...]
    measurements: tuple[dict[str, Any], ...]
    state: DraftState
    reason: str
    drafted_by: str
    drafted_at: dt.datetime
    decided_by: str | None
    decided_at: dt.datetime | None
    decision_reason: str | None
    source: str

    @classmethod
    def of(cls, row: GoldenDraft) -> DraftView:
        return cls(
            row.id,
            row.golden_name,
            row.base_version,
            row.version,
            row.attestation_id,
            row.node_name,
            tuple(store_console.as_json_list(row.events)),
            tuple(store_console.as_json_list(row.measurements)),
            row.state,
            row.reason,
            row.drafted_by,
            row.drafted_at,
            row.decided_by,
            row.decided_at,
            row.decision_reason,
            row.source.decode("utf-8", "replace"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "golden": self.golden,
            "base_version": self.base_version,
            "version": self.version,
            "attestation_id": str(self.attestation_id),
            "node": self.node,
            "events": list(self.events),
            "measurements": list(self.measurements),
            "state": self.state,
            "reason": self.reason,
            "drafted_by": self.drafted_by,
            "drafted_at": iso(self.drafted_at),
            "decided_by": self.decided_by,
            "decided_at": iso(self.decided_at),
            "decision_reason": self.decision_reason,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class Approved:
    draft: DraftView
    golden: golden_ops.GoldenView
    reappraised: list[Reappraisal]

    def to_json(self) -> dict[str, Any]:
        return {
            "draft": self.draft.to_json(),
            "golden": self.golden.to_json(),
            "reappraised": [r.to_json() for r in self.reappraised],
        }


def candidates(svc: Services, attestation_id: str) -> list[Candidate]:
    """Every event a failing check of the attestation names, with what promoting it would add."""
    with svc.store.read() as db:
        row, node = find_attestation(db, attestation_id)
        log = stored_log.load(svc, db, row, node)
        verdict = hotpath.verdict_of(db, row)
    checks = _failing_by_event(verdict)
    out: list[Candidate] = []
    for index, check in sorted(checks.items()):
        kind = PROMOTABLE.get(str(check.get("reason")))
        value = str(check.get("got") or "")
        if log.verified is None:
            kind, value = None, log.problem
        out.append(
            Candidate(
                index,
                int(check.get("pcr") or 0),
                str(check.get("id")),
                str(check.get("reason")),
                kind,
                value,
            )
        )
    return out


def _failing_by_event(verdict: Any) -> dict[int, dict[str, Any]]:
    checks = verdict.get("checks", []) if isinstance(verdict, dict) else []
    out: dict[int, dict[str, Any]] = {}
    for c in checks:
        if isinstance(c, dict) and c.get("status") == "fail" and isinstance(c.get("event"), int):
            out.setdefault(int(c["event"]), c)
    return out


def draft(
    svc: Services,
    attestation_id: str,
    golden_ref: str,
    events: Sequence[int],
    reason: str,
    caller: Caller,
    version: str | None = None,
) -> DraftView:
    if not events or len(events) > MAX_EVENTS:
        raise BadRequest("bad_field", f"select 1..{MAX_EVENTS} events to promote")
    now = svc.now()
    with svc.store.write() as db:
        row, node = find_attestation(db, attestation_id)
        # 1. Verified again.
        log = stored_log.load(svc, db, row, node)
        if log.verified is None:
            raise Conflict("evidence_unverifiable", log.problem)
        # 2. Failing, promotable events.
        failing = _failing_by_event(hotpath.verdict_of(db, row))
        chosen = [_promotable(failing, i) for i in sorted(set(events))]
        # 3. The base version.
        base = _base(db, golden_ref, row.golden_versions)
        # 4. The draft.
        new_version = _new_version(db, base, version)
        gs, added = _extend(base, log.verified, chosen)
        gs = dataclasses.replace(
            gs,
            version=new_version,
            status="active",
            status_reason=None,
            description=_provenance(base, row.id, node.name, chosen, caller, now),
        )
        record = GoldenDraft(
            golden_name=base.name,
            base_version=base.version,
            version=new_version,
            source=dump_yaml(gs).encode(),
            attestation_id=row.id,
            node_name=node.name,
            events=[int(c["event"]) for c in chosen],
            measurements=added,
            state=DraftState.DRAFT,
            reason=reason,
            drafted_by=caller.actor,
            drafted_token=caller.token_id,
            drafted_at=now,
        )
        db.add(record)
        db.flush()
        details = {"draft": str(record.id), "attestation_id": str(row.id), "events": record.events}
        for t in (f"{base.name}@{new_version}", node.name):
            repo.audit(db, caller.actor, "golden_draft", t, reason, details, now=now)
        return DraftView.of(record)


def _promotable(failing: dict[int, dict[str, Any]], index: int) -> dict[str, Any]:
    check = failing.get(index)
    if check is None:
        raise BadRequest("event_not_failing", f"event {index} is named by no failing check")
    if str(check.get("reason")) not in PROMOTABLE:
        raise BadRequest(
            "not_promotable",
            f"event {index} fails {check.get('id')} ({check.get('reason')}): not a measurement "
            "a golden version can approve by promotion",
        )
    return check


def _base(db: Session, ref: str, consulted: Sequence[str]) -> GoldenSet:
    name, _, version = ref.partition("@")
    if ref not in consulted:
        raise BadRequest(
            "bad_field", f"{ref!r} is not a golden version this attestation was appraised against"
        )
    row = repo.get_golden(db, name, version)
    if row is None:
        raise NotFound("golden_unknown", f"no golden set {ref}")
    if row.status != "active":
        raise Conflict("golden_not_active", f"{ref} is {row.status}: draft from an active version")
    return golden_from_row(row)


def _new_version(db: Session, base: GoldenSet, wanted: str | None) -> str:
    taken = {r.version for r in repo.list_golden(db, name=base.name)}
    taken |= store_console.draft_versions(db, base.name)
    if wanted:
        if not wanted.isprintable() or len(wanted) > 64:
            raise BadRequest("bad_field", "version must be printable text of at most 64 characters")
        if wanted in taken:
            raise Conflict("golden_exists", f"{base.name}@{wanted} exists or is drafted")
        return wanted
    numbers = [int(v) for v in taken if v.isascii() and v.isdigit() and len(v) < 12]
    if base.version.isascii() and base.version.isdigit() and len(base.version) < 12:
        return str(max(numbers, default=int(base.version)) + 1)
    n = 1
    while f"{base.version}.{n}" in taken:
        n += 1
    return f"{base.version}.{n}"


def _provenance(
    base: GoldenSet,
    att_id: int,
    node: str,
    chosen: list[dict[str, Any]],
    caller: Caller,
    now: dt.datetime,
) -> str:
    events = ", ".join(str(c["event"]) for c in chosen)
    return (
        f"{base.ref} plus events {events} of attestation {att_id} (node {node}), "
        f"drafted by {caller.actor} at {iso(now)}"
    )


def _digests(e: Event, bank: HashAlg) -> Any:
    return digests({bank: e.digests[bank]})


def _extend(
    base: GoldenSet, vlog: VerifiedBootLog, chosen: list[dict[str, Any]]
) -> tuple[GoldenSet, list[dict[str, Any]]]:
    """The base plus each chosen event's verified measurement, where the appraisal looks for it."""
    gs, added = base, []
    events = {e.index: e for e in vlog.events}
    for check in chosen:
        e = events.get(int(check["event"]))
        if e is None or vlog.bank not in e.digests:
            raise BadRequest(
                "event_not_failing", f"event {check['event']} is not in the verified log"
            )
        kind = PROMOTABLE[str(check["reason"])]
        label = f"promoted: {where(e)}"
        gs, value = _add(gs, kind, e, vlog, label, check)
        added.append({"event": e.index, "pcr": e.pcr, "kind": kind, "value": value, "label": label})
    return gs, added


def _add(
    gs: GoldenSet, kind: str, e: Event, vlog: VerifiedBootLog, label: str, check: dict[str, Any]
) -> tuple[GoldenSet, str]:
    d = _digests(e, vlog.bank)
    digest = e.digests[vlog.bank].hex()
    if kind == "boot_app":
        role: Role = "driver" if e.pcr == 2 else _role(gs, vlog, e)
        return gs.with_boot_apps([BootApp(label, role, d)]), digest
    if kind == "cmdline":
        got = check.get("got")
        rule = (
            CmdlineRule(exact=str(got))
            if e.pcr in (8, 12) and isinstance(got, str)
            else CmdlineRule(load_options=d)
        )
        value = rule.exact if rule.exact is not None else digest
        return dataclasses.replace(gs, cmdlines=(*gs.cmdlines, rule)), value
    if kind == "initrd":
        return dataclasses.replace(gs, initrds=(*gs.initrds, Measured(label, d))), digest
    if kind == "firmware_blob":
        fw = dataclasses.replace(gs.firmware, blobs=(*gs.firmware.blobs, Measured(label, d)))
        return dataclasses.replace(gs, firmware=fw), digest
    if kind == "moklist":
        shim: Shim = dataclasses.replace(gs.shim, moklist=(*gs.shim.moklist, Measured(label, d)))
        return dataclasses.replace(gs, shim=shim), digest
    per_pcr = dict(gs.measurements)
    per_pcr[e.pcr] = (*per_pcr.get(e.pcr, ()), Measured(label, d))
    return dataclasses.replace(gs, measurements=MappingProxyType(per_pcr)), digest


def _role(gs: GoldenSet, vlog: VerifiedBootLog, e: Event) -> Role:
    """The boot stage of a promoted PCR4 application: the stage at its position in the set's boot
    order (the n-th application of the boot is the n-th stage), else ``other``."""
    apps = [x.index for x in vlog.events if x.pcr == 4 and x.event_type == e.event_type]
    position = apps.index(e.index) if e.index in apps else -1
    if 0 <= position < len(gs.boot_order):
        return gs.boot_order[position]
    return "other"


def _get(db: Session, draft_id: str | int) -> GoldenDraft:
    text = str(draft_id)
    row = (
        db.get(GoldenDraft, int(text))
        if text.isascii() and text.isdigit() and len(text) < 18
        else None
    )
    if row is None:
        raise NotFound("draft_unknown", f"no golden draft {text!r}")
    return row


def parse_draft_state(text: str) -> DraftState:
    try:
        return DraftState(text)
    except ValueError:
        raise BadRequest("bad_query", f"state must be one of {', '.join(DraftState)}") from None


def pending(svc: Services) -> list[DraftView]:
    """Drafts awaiting a decision."""
    return list_drafts(svc, state=DraftState.DRAFT)


def list_drafts(svc: Services, *, state: DraftState | None = None) -> list[DraftView]:
    with svc.store.read() as db:
        return [DraftView.of(r) for r in store_console.list_drafts(db, state=state)]


def show(svc: Services, draft_id: str | int) -> DraftView:
    with svc.store.read() as db:
        return DraftView.of(_get(db, draft_id))


def _four_eyes(db: Session, row: GoldenDraft, caller: Caller) -> None:
    if caller.token_id == row.drafted_token:
        raise Forbidden("four_eyes", "the drafter cannot approve their own draft: ask someone else")
    if store_console.token_creator(db, caller.token_id) == row.drafted_by:
        raise Forbidden(
            "four_eyes", "this token was created by the drafter: approval needs another person"
        )


def approve(svc: Services, draft_id: str | int, reason: str, caller: Caller) -> Approved:
    """Four eyes: a different person makes the draft an active version; affected nodes are
    re-appraised at once."""
    now = svc.now()
    try:
        with svc.store.write() as db:
            row = _get(db, draft_id)
            if row.state != DraftState.DRAFT:
                raise Conflict("draft_decided", f"draft {row.id} is already {row.state}")
            _four_eyes(db, row, caller)
            gs = parse_golden("yaml", row.source)
            golden_row = golden_ops.insert_version(db, gs, "yaml", row.source, caller.actor, now)
            row.state, row.decided_by, row.decided_at = DraftState.APPROVED, caller.actor, now
            row.decision_reason = reason
            details = {"draft": str(row.id), "drafted_by": row.drafted_by}
            for t in (gs.ref, row.node_name):
                repo.audit(db, caller.actor, "golden_approve", t, reason, details, now=now)
            view, golden = DraftView.of(row), golden_ops.GoldenView.of(golden_row)
            why = f"{golden.name}@{golden.version} approved: {reason}"
            job_id, held = start_job(db, gs.name, why, caller.actor, svc.holder, now)
    except IntegrityError:
        raise Conflict("golden_exists", "that golden version was added meanwhile") from None
    # Batches of nodes, one transaction each; another instance finishes it if this one dies.
    return Approved(view, golden, run_job(svc, job_id, held))


def reject(svc: Services, draft_id: str | int, reason: str, caller: Caller) -> DraftView:
    """Refuse a draft; it is kept, with who refused it and why."""
    now = svc.now()
    with svc.store.write() as db:
        row = _get(db, draft_id)
        if row.state != DraftState.DRAFT:
            raise Conflict("draft_decided", f"draft {row.id} is already {row.state}")
        row.state, row.decided_by, row.decided_at = DraftState.REJECTED, caller.actor, now
        row.decision_reason = reason
        target = f"{row.golden_name}@{row.version}"
        for t in (target, row.node_name):
            repo.audit(
                db, caller.actor, "golden_reject", t, reason, {"draft": str(row.id)}, now=now
            )
        return DraftView.of(row)
