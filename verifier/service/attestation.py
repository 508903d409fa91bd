"""Challenge–response attestation: nonce, evidence → verified quote → verified log → verdict.

``submit`` steps (labelled in the code):
 1. decode the bundle (size caps before CBOR) and check it names the node of the URL;
 2. the node is enrolled; consume the nonce atomically (any instance, exactly once);
 3. verify the quote with the node's enrolled AK (never a key from the evidence);
 4. find the log: sent, or the one already held for this boot (content-addressed);
 5. the quote covers every PCR the verifier asked for and the policy relies on;
 6. the log replays to the quoted PCRs — or, within one boot with an unchanged log, the cached
    verified log whose quoted values are identical (no re-parse);
 7. appraise against the node's golden sets (compiled once per set of versions);
 8. one transaction: the log (once per digest), the attestation and the node's new state
    (``record``, which re-appraisal uses too), the boot counters.
Failures in 1–3 refuse the evidence (4xx); failures from 5 on are stored verdicts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence, VerificationFailed
from assay.eventlog import VerifiedBootLog, parse_event_log, verify_log
from assay.evidence import Evidence, EvidenceCaps, decode_evidence
from assay.tpm2 import VerifiedQuote, parse_public, verify_quote
from verifier.appraisal import CheckStatus, VerdictStatus
from verifier.store import repo
from verifier.store.models import Attestation, AttestationSource, Node, NodeState, iso

from . import events
from .context import Services
from .errors import BadRequest, NotFound
from .golden_policy import Assessment, assess, failed, policy_for

NODE_NOT_ENROLLED = "node_not_enrolled"


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: bytes
    expires_at: dt.datetime
    pcr_selection: dict[str, list[int]]
    known_event_log_sha256: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "nonce": self.nonce.hex(),
            "expires_at": iso(self.expires_at),
            "pcr_selection": self.pcr_selection,
            "known_event_log_sha256": self.known_event_log_sha256,
        }


@dataclass(frozen=True, slots=True)
class AttestationResult:
    attestation_id: int
    status: VerdictStatus
    reason: str
    node_state: NodeState
    checks: list[dict[str, Any]]
    reboot: bool

    def to_json(self) -> dict[str, Any]:
        """What the (unauthenticated) poster learns: status, reason codes and check ids.

        Never the approved values (``expected`` digests and command lines, golden messages):
        those are for reviewers (``GET /v1/attestations/{id}``). A failure found before the
        policy (replay, coverage, log syntax) keeps its message, which is about the node's own
        evidence only.
        """
        return {
            "attestation_id": str(self.attestation_id),
            "status": self.status,
            "reason": poster_reason(self.reason, self.checks),
            "node_state": self.node_state,
            "reboot": self.reboot,
            "checks": [{k: c.get(k) for k in POSTER_CHECK_KEYS} for c in self.checks],
        }


POSTER_CHECK_KEYS = ("id", "status", "reason")
PRE_POLICY_CODES = frozenset(
    {
        "pcr_not_quoted",
        "pcr_replay_mismatch",
        "pcr_replay_incomplete",
        "bank_not_in_log",
        "bank_not_quoted",
        "event_log_malformed",
        "event_log_missing",
    }
)
"""Verdicts decided before any golden set was consulted: their message names only the node's own
quote and log, so the poster may read it."""


def poster_reason(reason: str, checks: list[dict[str, Any]]) -> str:
    """The verdict's reason without golden values: the deciding check's code, or "all … passed"."""
    for wanted in (CheckStatus.FAIL, CheckStatus.UNKNOWN):
        for c in checks:
            if c.get("status") == wanted:
                code = str(c.get("reason", ""))
                keep = code in PRE_POLICY_CODES and reason.startswith(code + ":")
                return reason if keep else code
    return reason


def _enrolled(db: Session, name: str) -> Node:
    node = repo.get_node(db, name)
    if node is None:
        raise NotFound(NODE_NOT_ENROLLED, f"node {name!r} is not enrolled; enroll again")
    return node


AUDIT_WINDOW = dt.timedelta(minutes=10)


def challenge(svc: Services, node_name: str, event_log_sha256: str | None = None) -> Challenge:
    """A nonce for ``node_name``; the answer looks the same whether or not the node exists.

    Unauthenticated, so it reveals nothing the caller does not already know, and writes nothing:
    the nonce is stateless (``repo.issue_nonce``: node and expiry encrypted, then authenticated),
    so no flood of challenges can use up or evict the agent's. An unknown node gets 32 random
    bytes, which look like any nonce (the evidence step says ``node_not_enrolled``), and
    ``known_event_log_sha256`` is only the digest the caller itself sent, echoed when the verifier
    holds that log as the node's current boot log.
    """
    now = svc.now()
    lifetime = dt.timedelta(seconds=svc.config.nonce_lifetime)
    selection = {svc.config.bank: list(svc.config.pcrs)}
    key = svc.nonce_key()
    with svc.store.read() as db:  # nothing is written for a challenge
        node = repo.get_node(db, node_name)
        if node is None:
            expires = dt.datetime.fromtimestamp(int((now + lifetime).timestamp()), dt.UTC)
            return Challenge(secrets.token_bytes(32), expires, selection, None)
        issued = repo.issue_nonce(db, node.id, lifetime=lifetime, now=now, key=key)
        known = node.boot_log_sha256
        if known is None or known != event_log_sha256 or not repo.has_event_log(db, known):
            known = None
    return Challenge(issued.nonce, issued.expires_at, selection, known)


def submit(svc: Services, node_name: str, body: bytes) -> AttestationResult:
    cfg = svc.config
    # 1. Decode.
    ev = decode_evidence(body, EvidenceCaps(cfg.max_bundle, cfg.max_event_log, cfg.max_ima_log))
    if ev.node != node_name:
        raise BadRequest("node_mismatch", f"the evidence is for {ev.node!r}, not {node_name!r}")
    now = svc.now()
    # 2. Node and nonce (the shared key first: it may need its own write, never a nested one).
    key = svc.nonce_key()
    with svc.store.write() as db:
        node = _enrolled(db, node_name)
        node_id, ak_public = node.id, node.ak_public
        refused = repo.consume_nonce(db, node.id, ev.nonce, now, key)
    if refused is not None:
        raise VerificationFailed(f"nonce refused: {refused.removeprefix('nonce_')}", code=refused)
    # 3. Quote, with the enrolled AK only.
    try:
        quote = verify_quote(ev.attest, ev.signature, parse_public(ak_public), ev.nonce, ev.pcrs)
    except (VerificationFailed, MalformedEvidence) as exc:
        with svc.store.write() as db:
            repo.audit_coalesced(
                db, "agent", "evidence_refused", node_name, str(exc), now=now, window=AUDIT_WINDOW
            )
        raise
    # 4. The log.
    log_hex = ev.event_log_sha256.hex()
    log_bytes = ev.event_log
    if log_bytes is None and (log_hex, int(cfg.hash_alg)) not in svc.logs:
        with svc.store.read() as db:
            log_bytes = repo.get_event_log(db, log_hex)
        if log_bytes is None:
            raise VerificationFailed(
                "the verifier does not hold that event log; send it", code="event_log_missing"
            )
    # 5-7. Verify the log and appraise.
    with svc.store.read() as db:
        rows = repo.golden_rows_for(db, node.labels)
    assessment = appraise_evidence(svc, quote, log_hex, log_bytes, rows)
    # 8. Store.
    quoted = QuotedEvidence(
        nonce=ev.nonce,
        quote=ev.attest,
        signature=ev.signature,
        pcrs=pcrs_json(ev.pcrs),
        event_log_sha256=log_hex,
        agent_version=ev.agent_version,
        reset_count=quote.reset_count,
        restart_count=quote.restart_count,
    )
    return _record_new(svc, node_id, quoted, log_bytes, assessment, now)


def appraise_evidence(
    svc: Services, quote: VerifiedQuote, log_hex: str, log_bytes: bytes | None, rows: list[Any]
) -> Assessment:
    """Steps 5–7 for a verified quote: coverage, verified log (cached), appraisal."""
    bank = svc.config.hash_alg
    policy = policy_for(svc, rows)
    # 5. Coverage: what the verifier asked for and what the policy relies on.
    quoted = set(quote.pcrs.get(bank, {}))
    missing = sorted((set(svc.config.pcrs) | policy.required_pcrs) - quoted)
    if missing:
        return failed(
            VerdictStatus.UNKNOWN,
            "pcr_not_quoted",
            f"the quote does not cover {bank.bank} PCRs {missing}",
        )
    # 6. Verified log.
    try:
        vlog = verified_log(svc, quote, bank, log_hex, log_bytes)
    except VerificationFailed as exc:
        return failed(VerdictStatus.UNTRUSTED, exc.code, str(exc))
    except MalformedEvidence as exc:
        return failed(VerdictStatus.UNTRUSTED, "event_log_malformed", str(exc))
    # 7. Appraisal.
    return assess(vlog, policy)


def verified_log(
    svc: Services, quote: VerifiedQuote, bank: HashAlg, log_hex: str, log_bytes: bytes | None
) -> VerifiedBootLog:
    """The verified log for this quote: the cached one when the quoted values are unchanged."""
    key = (log_hex, int(bank))
    cached = svc.logs.get(key)
    quoted = dict(quote.pcrs.get(bank, {}))
    if isinstance(cached, VerifiedBootLog) and dict(cached.pcrs) == quoted:
        return cached
    if log_bytes is None:
        with svc.store.read() as db:
            log_bytes = repo.get_event_log(db, log_hex)
        if log_bytes is None:
            raise VerificationFailed("the event log is no longer stored", code="event_log_missing")
    vlog = verify_log(parse_event_log(log_bytes), quote, bank, caches=svc.log_caches)
    svc.logs.put(key, vlog)
    return vlog


@dataclass(frozen=True, slots=True)
class QuotedEvidence:
    """What an attestation keeps of the evidence it appraised: the quote as signed, the PCR
    values, the log by digest — enough to verify and appraise it again (re-appraisal)."""

    nonce: bytes
    quote: bytes
    signature: bytes
    pcrs: Mapping[str, Mapping[str, str]]
    event_log_sha256: str | None
    agent_version: str
    reset_count: int | None
    restart_count: int | None

    @classmethod
    def of(cls, row: Attestation) -> QuotedEvidence:
        return cls(
            row.nonce,
            row.quote,
            row.signature,
            row.pcrs,
            row.event_log_sha256,
            row.agent_version,
            row.reset_count,
            row.restart_count,
        )


def _record_new(
    svc: Services,
    node_id: int,
    ev: QuotedEvidence,
    log_bytes: bytes | None,
    a: Assessment,
    now: dt.datetime,
) -> AttestationResult:
    """Step 8 for new evidence: the log, the attestation and new state, the boot counters."""
    with svc.store.write() as db:
        node = db.get(Node, node_id)
        if node is None:  # deleted while we verified
            raise NotFound(NODE_NOT_ENROLLED, "the node was deleted; enroll again")
        log_hex = ev.event_log_sha256
        if log_hex and log_bytes is not None and hashlib.sha256(log_bytes).hexdigest() == log_hex:
            repo.put_event_log(db, log_hex, log_bytes, now)
        reboot = node.last_reset_count is not None and ev.reset_count != node.last_reset_count
        row = record(
            db,
            node,
            ev,
            a,
            source=AttestationSource.EVIDENCE,
            now=now,
            quoted_at=now,
            reboot=reboot,
        )
        if reboot:
            node.last_reboot_at = now
        node.last_reset_count = ev.reset_count
        node.last_restart_count = ev.restart_count
        node.boot_log_sha256 = log_hex
        node.last_attested_at = now
        return AttestationResult(row.id, a.status, a.reason, node.state, a.checks, reboot)


def record(
    db: Session,
    node: Node,
    ev: QuotedEvidence,
    a: Assessment,
    *,
    source: AttestationSource,
    now: dt.datetime,
    quoted_at: dt.datetime,
    reboot: bool = False,
) -> Attestation:
    """Record an attestation of ``node`` and move the node to its new state, in ``db``'s
    transaction: the one place both new evidence and a re-appraisal are written.

    A quarantined node stays quarantined. Freshness comes only from the quote: ``quoted_at`` is
    when the appraised quote was verified (``now`` for new evidence, the stored evidence's time
    for a re-appraisal), so re-appraising old evidence never makes a node fresher than its last
    real attestation.
    """
    before = events.standing(node)
    row = Attestation(
        node_id=node.id,
        created_at=now,
        source=source,
        status=a.status,
        reason=a.reason,
        verdict=a.verdict,
        nonce=ev.nonce,
        quote=ev.quote,
        signature=ev.signature,
        pcrs=dict(ev.pcrs),
        event_log_sha256=ev.event_log_sha256,
        agent_version=ev.agent_version,
        reset_count=ev.reset_count,
        restart_count=ev.restart_count,
        reboot=reboot,
        golden_versions=a.golden,
    )
    db.add(row)
    db.flush()
    node.last_attestation_id = row.id
    node.golden_versions = a.golden
    node.booted_versions = a.booted
    if a.status == VerdictStatus.TRUSTED and (node.last_success_at or quoted_at) <= quoted_at:
        node.last_success_at = quoted_at
    if node.state != NodeState.QUARANTINED:
        state = NodeState.after(a.status)
        if node.state != state:
            node.state_since = now
        node.state, node.reason = state, a.reason
    events.node_state_changed(db, node, before, row)
    return row


def pcrs_json(pcrs: Any) -> dict[str, dict[str, str]]:
    return {
        alg.bank: {str(p): v.hex() for p, v in sorted(vals.items())} for alg, vals in pcrs.items()
    }


def pcrs_from_json(data: dict[str, dict[str, str]]) -> dict[HashAlg, dict[int, bytes]]:
    return {
        HashAlg.from_bank(bank): {int(p): bytes.fromhex(v) for p, v in vals.items()}
        for bank, vals in data.items()
    }


def find_attestation(db: Session, attestation_id: str) -> tuple[Attestation, Node]:
    """The attestation with API id ``attestation_id`` (decimal text) and its node, or NotFound."""
    unknown = NotFound("attestation_unknown", f"no attestation {attestation_id!r}")
    if not (attestation_id.isascii() and attestation_id.isdigit()) or len(attestation_id) > 18:
        raise unknown
    row = db.get(Attestation, int(attestation_id))
    node = db.get(Node, row.node_id) if row is not None else None
    if row is None or node is None:
        raise unknown
    return row, node


def stored_evidence(svc: Services, attestation_id: str) -> Evidence:
    """The evidence of an attestation reassembled from what is stored (quote, signature, PCR
    values, nonce, the log by digest): its signature verifies again as it did."""
    with svc.store.read() as db:
        row, node = find_attestation(db, attestation_id)
        log = repo.get_event_log(db, row.event_log_sha256) if row.event_log_sha256 else None
        return Evidence(
            node=node.name,
            agent_version=row.agent_version,
            nonce=row.nonce,
            attest=row.quote,
            signature=row.signature,
            pcrs=pcrs_from_json(row.pcrs),
            event_log_sha256=bytes.fromhex(row.event_log_sha256 or "00" * 32),
            event_log=log,
            ima_log=None,
        )
