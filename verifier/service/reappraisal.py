"""Re-appraisal: a node's latest stored evidence appraised again against today's golden sets.

The stored quote is verified again with the node's AK and nonce, the log replayed against it
(cached when unchanged), and the verdict recorded (``attestation.record``) as a ``reappraisal``
attestation that moves the node's state. It never refreshes a node: freshness stays that of the
stored evidence. One node's re-appraisal (an admin request, a label change) runs in one
transaction; whatever may touch many nodes — a golden retire or revoke, an approved golden draft,
a runtime policy's status change, the admin "every node" request — runs as a batched job
(``ReappraisalJob``, 200 nodes per transaction under a lease), so thousands of nodes move in
seconds, no transaction holds a fleet's rows, and another instance finishes the job after a crash.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from assay.errors import MalformedEvidence, VerificationFailed
from assay.tpm2 import parse_public, verify_quote
from verifier.appraisal import VerdictStatus
from verifier.store import hotpath, leases, repo
from verifier.store import runtime as rstore
from verifier.store.models import Attestation, AttestationSource, Node, NodeState, ReappraisalJob

from . import runtime_verdict
from .attestation import (
    QuotedEvidence,
    StoredVerdicts,
    ToRecord,
    appraise_evidence,
    pcrs_from_json,
    record_many,
)
from .context import Services
from .errors import NotFound
from .golden_policy import Assessment, failed, policy_for
from .reuse import verdict_key

JOB_BATCH = 200
LEASE_TTL = 30.0
"""The lease a new job starts with (its runner renews it with the configured ``lease_ttl``)."""


@dataclass(frozen=True, slots=True)
class Reappraisal:
    """What re-appraising one node's stored evidence did."""

    node: str
    status: VerdictStatus
    state: NodeState
    reason: str
    attestation_id: int

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "status": self.status,
            "state": self.state,
            "reason": self.reason,
            "attestation_id": str(self.attestation_id),
        }


def _node(db: Session, name: str) -> Node:
    node = repo.get_node(db, name)
    if node is None:
        raise NotFound("node_unknown", f"no node named {name!r}")
    return node


def reappraise_nodes(
    svc: Services, names: Sequence[str] | None, reason: str, actor: str
) -> list[Reappraisal]:
    """Re-appraise each named node in one transaction; every node (``names`` None) as a job of
    batches (``EVERY_NODE``)."""
    now = svc.now()
    if names is None:
        with svc.store.write() as db:
            job_id, held = start_job(db, "", reason, actor, svc.holder, now, kind=EVERY_NODE)
        return run_job(svc, job_id, held)
    with svc.store.write() as db:
        nodes = [_node(db, n) for n in names]
        return reappraise_batch(svc, db, nodes, reason, actor, now)


def reappraise_batch(
    svc: Services, db: Session, nodes: Sequence[Node], reason: str, actor: str, now: dt.datetime
) -> list[Reappraisal]:
    """Re-appraise ``nodes`` in ``db``'s transaction (those without stored evidence are left
    as they are): their latest evidence read in two queries, verdicts shared by verdict key
    (each stored quote still verified with its own AK), all recorded by ``record_many``."""
    latest = hotpath.latest_evidence_ids(db, [n.id for n in nodes])
    ids = list(latest.values())
    rows = {r.id: r for r in db.scalars(select(Attestation).where(Attestation.id.in_(ids)))}
    memo = JobMemo(hotpath.golden_version(db), {}, StoredVerdicts())
    items: list[ToRecord] = []
    for node in nodes:
        last = rows.get(latest.get(node.id, -1))
        if last is not None:
            boot = _reassess(svc, db, node, last, memo)
            # the runtime part from the node's stored IMA prefix (no IMA list is stored)
            a = runtime_verdict.reassess(svc, db, node.id, node.labels, boot)
            fields = {"verdict_key": None}  # the next evidence is appraised in full
            source = AttestationSource.REAPPRAISAL
            items.append(
                ToRecord(node, QuotedEvidence.of(last), a, source, last.created_at, False, fields)
            )
    done = record_many(db, items, now=now, stored=memo.stored)
    out = []
    for item, rec in zip(items, done, strict=True):
        a = item.assessment
        details = {"status": a.status, "attestation_id": rec.attestation_id}
        repo.audit(db, actor, "reappraise", item.node.name, reason, details, now=now)
        out.append(Reappraisal(item.node.name, a.status, rec.state, a.reason, rec.attestation_id))
    return out


@dataclass
class JobMemo:
    """What the nodes of one batch share: the golden version read once, verdicts by verdict
    key (each node's stored quote is still verified with its own AK), verdicts stored."""

    golden_version: int
    verdicts: dict[str, Assessment]
    stored: StoredVerdicts


def _reassess(
    svc: Services, db: Session, node: Node, last: Attestation, memo: JobMemo | None
) -> Assessment:
    try:
        quote = verify_quote(
            last.quote,
            last.signature,
            parse_public(node.ak_public),
            last.nonce,
            pcrs_from_json(last.pcrs),
        )
    except (VerificationFailed, MalformedEvidence) as exc:
        return failed(VerdictStatus.UNKNOWN, "stored_evidence_invalid", str(exc))
    if last.event_log_sha256 is None:
        return failed(VerdictStatus.UNKNOWN, "event_log_missing", "no event log stored")
    rows = svc.golden.rows_for(db, node.labels, None if memo is None else memo.golden_version)
    if memo is None:
        return appraise_evidence(svc, quote, last.event_log_sha256, None, rows)
    key = verdict_key(svc, quote, last.event_log_sha256, rows, policy_for(svc, rows))
    known = memo.verdicts.get(key)
    if known is None:
        known = appraise_evidence(svc, quote, last.event_log_sha256, None, rows)
        memo.verdicts[key] = known
    return known


# --- batched jobs --------------------------------------------------------------------------------

GOLDEN, RUNTIME, EVERY_NODE = "golden", "runtime", "all"
"""Job kinds: the nodes a golden set applies to, those a runtime policy applies to, every node."""
JOB_KINDS = (GOLDEN, RUNTIME, EVERY_NODE)


def start_job(
    db: Session,
    name: str,
    reason: str,
    actor: str,
    holder: str,
    now: dt.datetime,
    *,
    kind: str = GOLDEN,
) -> tuple[int, leases.Held]:
    """Create a job for every node policy ``name`` of ``kind`` applies to (``EVERY_NODE``: every
    node, ``name`` unused), held by ``holder`` at once (in the caller's transaction, so no
    background runner takes it before the caller starts)."""
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown re-appraisal job kind {kind!r}")
    job = ReappraisalJob(
        kind=kind, golden_name=name, reason=reason, actor=actor, created_at=now, cursor=0
    )
    db.add(job)
    db.flush()
    held = leases.acquire(db, job_lease(job.id), holder, now, LEASE_TTL)
    assert held is not None  # a new job's lease is free
    return job.id, held


def job_lease(job_id: int) -> str:
    return f"reappraisal:{job_id}"


def run_job(svc: Services, job_id: int, held: leases.Held) -> list[Reappraisal]:
    """Run a job to its end in batches of ``JOB_BATCH`` nodes, one transaction each, while the
    lease is ours; returns what this caller re-appraised (a resumed job: the rest)."""
    results: list[Reappraisal] = []
    while True:
        now = svc.now()
        with svc.store.write() as db:
            if not leases.extend(db, held, now, svc.config.lease_ttl):
                return results  # someone else holds it now and continues
            job = db.get(ReappraisalJob, job_id)
            if job is None or job.finished_at is not None:
                return results
            batch, last_id = _job_batch(svc, db, job, now)
            results.extend(batch)
            if last_id is None:
                job.finished_at = now
                leases.finish(db, held, now, now)
                return results
            job.cursor = last_id


def _job_batch(
    svc: Services, db: Session, job: ReappraisalJob, now: dt.datetime
) -> tuple[list[Reappraisal], int | None]:
    nodes = list(
        db.scalars(select(Node).where(Node.id > job.cursor).order_by(Node.id).limit(JOB_BATCH))
    )
    if not nodes:
        return [], None
    name = job.golden_name
    if job.kind == EVERY_NODE:
        todo = nodes
    elif job.kind == RUNTIME:
        runtime = rstore.list_assignments(db)
        todo = [n for n in nodes if name in rstore.names_for(n.labels, runtime)]
    else:
        golden = repo.list_assignments(db)
        todo = [n for n in nodes if name in repo.golden_names_for(n.labels, golden)]
    return reappraise_batch(svc, db, todo, job.reason, job.actor, now), nodes[-1].id


def pending_jobs(db: Session) -> list[int]:
    q = select(ReappraisalJob.id).where(ReappraisalJob.finished_at.is_(None))
    return list(db.scalars(q.order_by(ReappraisalJob.id)))
