"""Challenge–response attestation: nonce, evidence → verified quote → verified log → verdict.

``submit`` steps (labelled in the code):
 1. decode the bundle (size caps before CBOR) and check it names the node of the URL;
 2. the node: the snapshot this worker kept from the node's last counted round (``Start.kept``:
    held to the row by the write, never enough to refuse), or one read — the node, the golden
    version, whether the nonce was used; its golden rows come from the catalog, by store version;
    the nonce's tag, owner and expiry are checked without I/O;
 3. verify the quote with the node's enrolled AK (never a key from the evidence); a refusal
    still uses the nonce up (with its audit entry, one write);
 3a. the runtime part (``runtime_verdict``): the IMA chunk continued from the verifier's own
    prefix of this boot, verified against the quoted PCR10 and judged by the node's runtime
    policies — every time, also when the boot verdict is reused below (an unchanged boot log is
    not an unchanged runtime); a chunk the verifier cannot continue is refused
    (``ima_full_log_required``, the nonce used up);
 4. reuse: within one boot, with the same log, PCR values and golden rows and a TPM clock that
    moved forward, the node's stored verdict is the answer (``reuse``) — no re-appraisal;
 5. the quote covers every PCR the verifier asked for and the policy relies on;
 6. the log (sent, or held for this boot) replays to the quoted PCRs — or the cached verified
    log whose quoted values are identical (no re-parse);
 7. appraise against the node's golden sets (compiled once per set of versions);
 8. one write transaction, made only where the node's row, the golden version and the TPM clock
    are still what the verdict relied on (else nothing is written and 2–8 run again from a fresh
    read): use the nonce (exactly once, any instance), then either count an
    unchanged re-attestation (``attestation_repeats``) or store the log (once per digest), the
    verdict (once per digest) and the attestation and move the node's state (``record``, which
    re-appraisal uses too; ``state_changed`` is where every change of a node's state passes).
Failures in 1–3 refuse the evidence (4xx); failures from 5 on are stored verdicts. A 200 answer
carries the node's next nonce (``next_challenge``), so a node that keeps attesting needs one
request per round; the challenge endpoint stays for first contact and recovery.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence, VerificationFailed
from assay.eventlog import VerifiedBootLog, parse_event_log, verify_log
from assay.evidence import Evidence, EvidenceCaps, decode_evidence
from assay.tpm2 import VerifiedQuote, parse_public, verify_quote
from verifier.appraisal import CheckStatus, VerdictStatus
from verifier.store import fullrecord, hotpath, repo
from verifier.store.hotpath import NodeSnapshot
from verifier.store.models import Attestation, AttestationSource, Node, NodeState, iso
from verifier.store.prepared import Db

from . import events, runtime_verdict
from .context import Services
from .errors import BadRequest, Conflict, NotFound
from .golden_policy import Assessment, assess, failed, policy_for
from .reuse import compact, prefetch_verdict, reusable, verdict_key
from .runtime_attest import IMA_PCR, RuntimeOutcome, store_prefix

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
    repeat: int = 0
    """0 for a full record; else this unchanged re-attestation's number among those counted on
    ``attestation_id`` (so ``(attestation_id, repeat)`` names each accepted request once)."""
    next_challenge: Challenge | None = None
    """The node's next nonce (and what the verifier holds of its log): its next round needs no
    challenge request. Agents that do not know the field ignore it."""
    ima: tuple[int, int] | None = None
    """Where the node's next IMA chunk starts (entries, bytes); None when it sent no IMA list."""

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
            "repeat": self.repeat,
            "checks": poster_checks(self.checks),
            **(
                {}
                if self.next_challenge is None
                else {"next_challenge": self.next_challenge.to_json()}
            ),
            **(
                {} if self.ima is None else {"ima": {"entries": self.ima[0], "offset": self.ima[1]}}
            ),
        }


POSTER_CHECK_KEYS = ("id", "status", "reason")
_POSTER: dict[int, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}


def poster_checks(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The checks as the poster sees them (id, status, reason), remembered for the lists of the
    cached reused assessments (the same list object answers every repeat of a verdict)."""
    known = _POSTER.get(id(checks))
    if known is not None and known[0] is checks:
        return known[1]
    out = [{k: c.get(k) for k in POSTER_CHECK_KEYS} for c in checks]
    if len(_POSTER) >= 256:
        _POSTER.clear()
    _POSTER[id(checks)] = (checks, out)  # holding ``checks`` keeps its id from being reused
    return out


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
    key = svc.nonce_key()
    with svc.store.raw_read() as raw:  # nothing is written for a challenge
        version, node = hotpath.version_and_snapshot(raw, node_name)
        known = None if node is None else node.boot_log_sha256
        if known is None or known != event_log_sha256 or not repo.has_event_log(raw, known):
            known = None
    with svc.store.read(statements_apart=True) as db:  # the catalog reads only when it misses
        selection = pcr_selection(svc, db, version)
    if node is None:
        expires = dt.datetime.fromtimestamp(int((now + lifetime).timestamp()), dt.UTC)
        return Challenge(secrets.token_bytes(32), expires, selection, None)
    issued = repo.make_nonce(node.id, lifetime=lifetime, now=now, key=key)
    return Challenge(issued.nonce, issued.expires_at, selection, known)


def pcr_selection(svc: Services, db: Session, version: int | None = None) -> dict[str, list[int]]:
    """The PCRs every node is asked to quote: the configured ones, and PCR10 (IMA's) once any
    runtime policy is stored — the same for every node, so a challenge says nothing about which
    nodes a policy selects, and agents that only quote what they are asked for send it too."""
    pcrs = set(svc.config.pcrs)
    if svc.runtime.in_use(db, version):
        pcrs.add(IMA_PCR)
    return {svc.config.bank: sorted(pcrs)}


def submit(svc: Services, node_name: str, body: bytes) -> AttestationResult:
    cfg = svc.config
    # 1. Decode.
    ev = decode_evidence(body, EvidenceCaps(cfg.max_bundle, cfg.max_event_log, cfg.max_ima_log))
    if ev.node != node_name:
        raise BadRequest("node_mismatch", f"the evidence is for {ev.node!r}, not {node_name!r}")
    now = svc.now()
    # 2. Node, golden rows, nonce (the shared key first: it may need its own write).
    key = svc.nonce_key()
    kept = _kept(svc, node_name)
    for _ in range(ATTEMPTS):
        if kept is not None:
            start = Start(kept[0], kept[1], nonce_used=False, kept=True)
        else:
            start = _read(svc, node_name, ev.nonce)
        try:
            return _attest(svc, ev, start, now, key)
        except _Stale:  # nothing was written: read the node and start again
            svc.nodes.discard(node_name)
            kept = None
    raise Conflict(
        "node_changed", "the node changed while its evidence was verified; send it again"
    )


ATTEMPTS = 3
"""A kept snapshot, then up to two fresh reads of a node that keeps changing under us."""


@dataclass(frozen=True, slots=True)
class Start:
    """Step 2's result: the node and the golden version its evidence is judged with."""

    node: NodeSnapshot
    golden_version: int
    nonce_used: bool
    kept: bool
    """The snapshot was kept from an earlier attestation (``Services.nodes``), not read now:
    it decides nothing alone — a write holds it to the row (``Fresh.golden_version`` and
    ``NodeSnapshot.row_version``), and a refusal is first retried from a fresh read."""


class _Stale(Exception):
    """What a write relied on (a kept snapshot, or a read since changed) no longer holds."""


def _kept(svc: Services, name: str) -> tuple[NodeSnapshot, int] | None:
    """The node's kept snapshot, if it was read with the golden version this process has."""
    got = svc.nodes.get(name)
    return got if got is not None and got[1] == svc.golden.version else None


def _read(svc: Services, name: str, nonce: bytes) -> Start:
    """The node, the golden version and whether ``nonce`` was used: one statement."""
    with svc.store.raw_read() as raw:
        read = hotpath.read_for_attestation(raw, name, nonce)
    if read is None:
        raise NotFound(NODE_NOT_ENROLLED, f"node {name!r} is not enrolled; enroll again")
    return Start(read.node, read.golden_version, read.nonce_used, kept=False)


def _attest(
    svc: Services, ev: Evidence, start: Start, now: dt.datetime, key: bytes
) -> AttestationResult:
    """Steps 2–8 from ``start``. Raises ``_Stale`` (nothing written) where ``start`` no longer
    holds, and instead of any refusal decided on a kept snapshot."""
    snap, version = start.node, start.golden_version
    # The catalogs reload by the version read (never older rows) and, like the verdict cache,
    # read the store only when they miss (a Session connects at its first statement).
    with svc.store.read(statements_apart=True) as db:
        rows = svc.golden.rows_for(db, snap.labels, version)
        rt_in = runtime_verdict.runtime_for(
            svc, db, snap.id, snap.labels, prefix=ev.ima_log is not None, version=version
        )
        selection = pcr_selection(svc, db, version)
        prefetch_verdict(svc, db, snap)
    checked = repo.check_nonce(snap.id, ev.nonce, now, key)
    refused = checked.refused or ("nonce_reused" if start.nonce_used else None)
    if refused is not None:
        if start.kept:
            raise _Stale
        raise VerificationFailed(f"nonce refused: {refused.removeprefix('nonce_')}", code=refused)
    # 3. Quote, with the enrolled AK only.
    try:
        quote = verify_quote(
            ev.attest, ev.signature, parse_public(snap.ak_public), ev.nonce, ev.pcrs
        )
    except (VerificationFailed, MalformedEvidence) as exc:
        if start.kept:  # the AK may have changed since: never refuse on a kept one
            raise _Stale from exc
        _refuse(svc, snap, ev.nonce, checked.expires_at, str(exc), now)
        raise
    # 3a. Runtime: the new IMA entries, always.
    try:
        runtime = runtime_verdict.appraise_ima(svc, ev, quote, rt_in)
    except Conflict as exc:  # ima_full_log_required: nothing is recorded, the nonce is used
        if start.kept:
            raise _Stale from exc
        _refuse(svc, snap, ev.nonce, checked.expires_at, exc.message, now)
        raise
    # 4. Reuse the stored verdict, or 5-7: verify the log and appraise.
    log_hex = ev.event_log_sha256.hex()
    policy = policy_for(svc, rows)
    vkey = runtime_verdict.verdict_key_with(verdict_key(svc, quote, log_hex, rows, policy), runtime)
    assessment = reusable(svc, snap, quote, vkey)
    reused = assessment is not None
    log_bytes = ev.event_log
    if assessment is None:
        log_bytes = _log_bytes(svc, log_hex, log_bytes)
        boot = appraise_evidence(svc, quote, log_hex, log_bytes, rows)
        assessment = runtime_verdict.combine(boot, runtime)
    # 8. Store, in one write transaction.
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
    ima_changed = runtime is not None and runtime.store != rt_in.prior
    fresh = Fresh(
        quoted, log_bytes, vkey, quote.clock, checked.expires_at, reused, version,
        runtime if ima_changed else None, ev.event_log,
    )  # fmt: skip
    try:
        stored = _store(svc, snap, fresh, assessment, now)
    except (VerificationFailed, NotFound) as exc:  # refused, nothing written
        if start.kept:
            raise _Stale from exc
        raise
    return dataclasses.replace(
        stored,
        next_challenge=_next_challenge(svc, snap.id, log_hex, now, key, selection),
        ima=runtime.cursor if runtime is not None and ev.ima_log is not None else None,
    )


def _log_bytes(svc: Services, log_hex: str, sent: bytes | None) -> bytes | None:
    """Step 6's input: the log sent, else None when this process holds its verified form, else
    the stored log of that digest (``event_log_missing`` when the verifier has none)."""
    if sent is not None or (log_hex, int(svc.config.hash_alg)) in svc.logs:
        return sent
    with svc.store.read() as db:
        stored = repo.get_event_log(db, log_hex)
    if stored is None:
        raise VerificationFailed(
            "the verifier does not hold that event log; send it", code="event_log_missing"
        )
    return stored


def _refuse(
    svc: Services,
    snap: NodeSnapshot,
    nonce: bytes,
    expires: dt.datetime,
    why: str,
    now: dt.datetime,
) -> None:
    """A quote that does not verify still uses its nonce up, with a (coalesced) audit entry."""
    with svc.store.write() as db:
        _use_nonce(db, snap, nonce, now, expires)
        repo.audit_coalesced(
            db, "agent", "evidence_refused", snap.name, why, now=now, window=AUDIT_WINDOW
        )


def _use_nonce(
    db: Session,
    snap: NodeSnapshot,
    nonce: bytes,
    now: dt.datetime,
    expires: dt.datetime,
    golden: int | None = None,
) -> NodeSnapshot:
    """Step 8's start: the node, locked, with ``nonce`` used; refused (and rolled back by the
    caller's transaction) when the node was deleted while we verified or the nonce was used.
    With ``golden`` (the version the verdict was reached with), ``_Stale`` unless the row, its
    TPM clock and the golden version are still those the verdict relied on."""
    locked = hotpath.use_nonce_and_lock(db, snap.id, nonce, now, expires)
    node = locked.node
    if node is None:
        raise NotFound(NODE_NOT_ENROLLED, "the node was deleted; enroll again")
    if not locked.nonce_fresh:
        raise VerificationFailed("nonce refused: reused", code="nonce_reused")
    if golden is not None and (
        node.row_version != snap.row_version
        or node.last_clock != snap.last_clock
        or locked.golden_version != golden
    ):
        raise _Stale
    return node


def _next_challenge(
    svc: Services,
    node_id: int,
    log_hex: str,
    now: dt.datetime,
    key: bytes,
    selection: dict[str, list[int]],
) -> Challenge:
    """The node's next nonce, good for its freshness window (at least ``nonce_lifetime``): a node
    attesting on its interval uses it in its next round instead of asking for a challenge."""
    seconds = max(svc.config.nonce_lifetime, svc.config.freshness_window)
    issued = repo.make_nonce(node_id, lifetime=dt.timedelta(seconds=seconds), now=now, key=key)
    return Challenge(issued.nonce, issued.expires_at, selection, log_hex)


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
    """The verified log for this quote: the cached one when the quoted values are unchanged
    (PCR10 aside, see ``same_boot_values``)."""
    key = (log_hex, int(bank))
    cached = svc.logs.get(key)
    quoted = dict(quote.pcrs.get(bank, {}))
    if isinstance(cached, VerifiedBootLog) and same_boot_values(cached, quoted):
        return cached
    if log_bytes is None:
        with svc.store.read() as db:
            log_bytes = repo.get_event_log(db, log_hex)
        if log_bytes is None:
            raise VerificationFailed("the event log is no longer stored", code="event_log_missing")
    vlog = verify_log(parse_event_log(log_bytes), quote, bank, caches=svc.log_caches)
    svc.logs.put(key, vlog)
    return vlog


def same_boot_values(cached: VerifiedBootLog, quoted: Mapping[int, bytes]) -> bool:
    """Whether ``cached`` was verified against these quoted values. PCR10, IMA's, moves with
    every measurement the running kernel makes; a boot log with no PCR10 event depends on it only
    through "extended outside the log" (zero or not), so for such a log only that must agree."""
    if cached.pcrs.keys() != quoted.keys():
        return False
    ima = IMA_PCR in quoted and not any(e.pcr == IMA_PCR for e in cached.events)
    for pcr, value in quoted.items():
        if ima and pcr == IMA_PCR:
            if any(value) != any(cached.pcrs[pcr]):
                return False
        elif cached.pcrs[pcr] != value:
            return False
    return True


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


@dataclass(frozen=True, slots=True)
class Fresh:
    """New evidence as step 8 stores it: what ``record`` keeps, the log (if sent), the verdict
    key, the quote's clock and the nonce's expiry."""

    evidence: QuotedEvidence
    log_bytes: bytes | None
    verdict_key: str
    clock: int
    nonce_expires: dt.datetime
    reused: bool
    """The node's stored verdict was reused (same boot, log, PCRs, golden rows; clock later)."""
    golden_version: int
    """The store's golden version the verdict was reached with: the write holds it."""
    runtime: RuntimeOutcome | None = None
    """The IMA prefix to keep (or drop) with this record; None when it did not change."""
    log_sent: bytes | None = None
    """The log the evidence carried (``decode_evidence`` checked it hashes to its digest)."""


def _store(
    svc: Services, snap: NodeSnapshot, new: Fresh, a: Assessment, now: dt.datetime
) -> AttestationResult:
    """Step 8: one write transaction; nothing of it lands if the nonce was used meanwhile."""
    ev = new.evidence
    repeat = new.reused and compact(snap, a)
    if repeat and new.runtime is None:
        counted = _store_repeat(svc, snap, new, now)  # None: the node changed since it was read
        if counted is not None:
            return _repeated(svc, snap, new, a, counted, now)
    if new.runtime is None and not svc.store.is_sqlite:
        return _record_at_once(svc, snap, new, a, now)
    with svc.store.write() as db:
        node = _use_nonce(db, snap, ev.nonce, now, new.nonce_expires, new.golden_version)
        if repeat and new.runtime is not None:  # the node is locked and still ``snap``
            counted = _count_repeat(db, snap, new, now)
            if counted is not None:
                store_prefix(db, snap.id, new.runtime, snap.last_attestation_id or 0, now)
                return _repeated(svc, snap, new, a, counted, now)
        log = _log_to_keep(new)
        if log is not None:
            repo.put_event_log(db, *log, now)
        reboot, fields = _evidence_fields(node, new, now)
        rec = record(
            db, node, ev, a, source=AttestationSource.EVIDENCE, now=now, quoted_at=now,
            reboot=reboot, node_fields=fields,
        )  # fmt: skip
        if new.runtime is not None:  # the prefix moves with the verdict that judged it
            store_prefix(db, snap.id, new.runtime, rec.attestation_id, now)
    svc.nodes.discard(snap.name)  # the row changed: the next attestation reads it
    return AttestationResult(rec.attestation_id, a.status, a.reason, rec.state, a.checks, reboot)


def _log_to_keep(new: Fresh) -> tuple[str, bytes] | None:
    """The log sent with the evidence, to store under its digest: an ``Evidence`` carries a log
    only when it hashes to that digest (a log read back from the store is not stored again)."""
    log_hex, sent = new.evidence.event_log_sha256, new.log_sent
    return None if log_hex is None or sent is None else (log_hex, sent)


def _evidence_fields(node: NodeLike, new: Fresh, now: dt.datetime) -> tuple[bool, dict[str, Any]]:
    """Whether the node rebooted, and the node's columns new evidence sets beside its state."""
    ev = new.evidence
    reboot = node.last_reset_count is not None and ev.reset_count != node.last_reset_count
    fields: dict[str, Any] = {
        "last_reset_count": ev.reset_count,
        "last_restart_count": ev.restart_count,
        "boot_log_sha256": ev.event_log_sha256,
        "last_attested_at": now,
        "last_clock": new.clock,
        "verdict_key": new.verdict_key,
    }
    if reboot:
        fields["last_reboot_at"] = now
    return reboot, fields


def _record_at_once(
    svc: Services, snap: NodeSnapshot, new: Fresh, a: Assessment, now: dt.datetime
) -> AttestationResult:
    """Step 8 on PostgreSQL without runtime news: ``record``'s full record of new evidence, the
    nonce and the log as one statement (``fullrecord``), written only where the node's row is
    still ``snap`` with the golden version the verdict was reached with (else ``_Stale``,
    nothing written). The verdict document is left out when this process knows it is stored and
    recently touched (``Services.stored_verdicts``). The node's snapshot is then kept as the
    statement left the row (with the row version its trigger set), and the verdict document
    cached, so the node's next unchanged round is one statement."""
    ev = new.evidence
    reboot, fields = _evidence_fields(snap, new, now)
    move = _node_values(ToRecord(snap, ev, a, AttestationSource.EVIDENCE, now, reboot, fields),
                        0, now)  # fmt: skip
    values = {k: v for k, v in move.values.items() if k != "last_attestation_id"}
    change = StateChange(
        snap.id, snap.name, move.old, move.old_reason, move.new, move.reason, now, None,
        tuple(a.golden),
    )  # fmt: skip
    digest, canonical = hotpath.canonical_verdict(a.verdict)
    known = svc.stored_verdicts.get(digest)
    fresh_enough = known is not None and known >= now - hotpath.TOUCH_AFTER
    rec = fullrecord.FullRecord(
        node_id=snap.id, row_version=snap.row_version, last_clock=snap.last_clock,
        golden=new.golden_version, nonce=ev.nonce, nonce_expires=new.nonce_expires, now=now,
        attestation=_attestation_row(
            ToRecord(snap, ev, a, AttestationSource.EVIDENCE, now, reboot), digest, now
        ),
        node=values,
        event=state_changed(None, change) if change.changed else None,
        log=_log_to_keep(new),
        verdict=None if fresh_enough else (digest, hotpath.compress_verdict(canonical)),
    )  # fmt: skip
    with svc.store.raw_write() as raw:
        written = fullrecord.write(raw, rec)
    if not written.nonce_fresh:
        raise VerificationFailed("nonce refused: reused", code="nonce_reused")
    if written.attestation_id is None:  # the node changed or went: read it again
        raise _Stale
    if written.verdict_created is not None:
        svc.stored_verdicts.put(digest, written.verdict_created)
    assert written.row_version is not None
    kept = dataclasses.replace(
        snap,
        **{k: v for k, v in values.items() if k in _SNAPSHOT_FIELDS},
        last_attestation_id=written.attestation_id,
        last_verdict_sha256=digest,
        row_version=written.row_version,
    )
    svc.nodes.put(snap.name, (kept, new.golden_version))  # the row as this statement left it
    if digest not in svc.verdicts:  # as ``prefetch_verdict`` would load it: the stored bytes
        svc.verdicts.put(digest, json.loads(canonical))
    return AttestationResult(written.attestation_id, a.status, a.reason, move.new, a.checks, reboot)


_SNAPSHOT_FIELDS = frozenset(f.name for f in dataclasses.fields(NodeSnapshot))


def _repeated(
    svc: Services, snap: NodeSnapshot, new: Fresh, a: Assessment, counted: int, now: dt.datetime
) -> AttestationResult:
    """The answer to an unchanged re-attestation, counted on the node's last full record; the
    node's snapshot is kept as the refresh left the row (same version: only the clock moved)."""
    kept = dataclasses.replace(snap, last_success_at=now, last_clock=new.clock)
    svc.nodes.put(snap.name, (kept, new.golden_version))
    return AttestationResult(
        snap.last_attestation_id or 0, a.status, a.reason, snap.state, a.checks, False, counted
    )


class _NodeChanged(Exception):
    """The node changed since it was read: the compact write rolls back for a full record."""


def _store_repeat(svc: Services, snap: NodeSnapshot, new: Fresh, now: dt.datetime) -> int | None:
    """Step 8 for an unchanged re-attestation without runtime news: nonce, refresh and count in
    one transaction on a connection without a Session; the count, or None (nothing written)
    when the node changed since it was read."""
    ev = new.evidence
    try:
        with svc.store.raw_write() as raw:
            got = hotpath.count_repeat(
                raw, snap, now, new.clock, ev.nonce, new.nonce_expires, ev.quote, ev.signature,
                new.golden_version,
            )  # fmt: skip
            if not got.nonce_fresh:
                raise VerificationFailed("nonce refused: reused", code="nonce_reused")
            if not got.node_unchanged:
                raise _NodeChanged
            return got.count
    except _NodeChanged:
        return None


def _count_repeat(db: Db, snap: NodeSnapshot, new: Fresh, now: dt.datetime) -> int | None:
    """An unchanged trusted re-attestation: count it on the node's last full attestation and
    refresh the node; its number, or None if the node changed since it was read (then a full
    record)."""
    assert snap.last_attestation_id is not None
    if not hotpath.refresh_unchanged_node(db, snap, now, new.clock, new.golden_version):
        return None
    ev = new.evidence
    return hotpath.add_repeat(db, snap.last_attestation_id, now, ev.nonce, ev.quote, ev.signature)


@dataclass(frozen=True, slots=True)
class Recorded:
    attestation_id: int
    state: NodeState


@dataclass(frozen=True, slots=True)
class StateChange:
    """A node's standing moved from (``old``, ``old_reason``) to (``new``, ``reason``), inside
    the transaction that moved it; callers pass only real changes (state or reason differ)."""

    node_id: int
    node: str
    old: NodeState
    old_reason: str
    new: NodeState
    reason: str
    at: dt.datetime
    attestation_id: int | None
    """The attestation that moved it; None for the stale sweep and admin actions."""
    golden: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return (self.old, self.old_reason) != (self.new, self.reason)


def state_changed(db: Session | None, change: StateChange) -> dict[str, Any]:
    """THE place where a change of a node's state passes, inside the write transaction that made
    it (``record`` for new evidence and re-appraisals, the stale sweep, quarantine, release).

    The change feed (``events``: the webhooks' outbox, the controller's and extender's source)
    is written here in ``db``, so what it records commits or rolls back with the change itself;
    with ``db`` None the caller writes the row returned in the statement that makes the change
    (new evidence's full record on PostgreSQL, ``_record_at_once``). An unchanged
    re-attestation never comes here (its state and reason stay as they are by construction)."""
    row = events.node_state_row(
        node=change.node, old_state=change.old, new_state=change.new, reason=change.reason,
        attestation_id=change.attestation_id, golden=change.golden, when=change.at,
    )  # fmt: skip
    if db is not None:
        events.add_row(db, row)
    return row


NodeLike = Node | NodeSnapshot


def _put_verdict(db: Session, a: Assessment, now: dt.datetime) -> str:
    digest, canonical = hotpath.canonical_verdict(a.verdict)
    hotpath.put_verdict(db, digest, canonical, now)
    return digest


class StoredVerdicts:
    """Verdicts one transaction already stored, by the identity of their assessment: a batch
    whose nodes share a verdict encodes and stores it once."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Assessment, str]] = {}

    def put(self, db: Session, a: Assessment, now: dt.datetime) -> str:
        known = self._by_id.get(id(a))
        if known is not None and known[0] is a:
            return known[1]
        digest = _put_verdict(db, a, now)
        self._by_id[id(a)] = (a, digest)  # holding ``a`` keeps its id from being reused
        return digest


@dataclass(frozen=True, slots=True)
class ToRecord:
    """One attestation for ``record_many``: what ``record`` takes for one node."""

    node: NodeLike
    evidence: QuotedEvidence
    assessment: Assessment
    source: AttestationSource
    quoted_at: dt.datetime
    reboot: bool = False
    node_fields: Mapping[str, Any] | None = None


def record(
    db: Session,
    node: NodeLike,
    ev: QuotedEvidence,
    a: Assessment,
    *,
    source: AttestationSource,
    now: dt.datetime,
    quoted_at: dt.datetime,
    reboot: bool = False,
    node_fields: Mapping[str, Any] | None = None,
) -> Recorded:
    """Record an attestation of ``node`` and move the node to its new state, in ``db``'s
    transaction: the one place both new evidence and a re-appraisal are written.

    A quarantined node stays quarantined. Freshness comes only from the quote: ``quoted_at`` is
    when the appraised quote was verified (``now`` for new evidence, the stored evidence's time
    for a re-appraisal), so re-appraising old evidence never makes a node fresher than its last
    real attestation. ``node_fields``: more columns of the node to set in the same update. An
    ORM ``Node`` passed in shows the new values afterwards (set as committed, no second flush).
    """
    item = ToRecord(node, ev, a, source, quoted_at, reboot, node_fields)
    return record_many(db, [item], now=now)[0]


def record_many(
    db: Session,
    items: Sequence[ToRecord],
    *,
    now: dt.datetime,
    stored: StoredVerdicts | None = None,
) -> list[Recorded]:
    """``record`` for several nodes at once (a batch of re-appraisals): each verdict stored once,
    the attestation rows in one INSERT … RETURNING, the node updates as one executemany per set
    of columns, then ``state_changed`` for each node whose state moved."""
    stored = stored if stored is not None else StoredVerdicts()
    rows = [_attestation_row(i, stored.put(db, i.assessment, now), now) for i in items]
    ids = hotpath.insert_attestations(db, rows)
    moves = [_node_values(i, row_id, now) for i, row_id in zip(items, ids, strict=True)]
    hotpath.update_nodes(db, [(i.node.id, m.values) for i, m in zip(items, moves, strict=True)])
    out = []
    for item, row_id, move in zip(items, ids, moves, strict=True):
        node = item.node
        if isinstance(node, Node):
            for name, value in move.values.items():
                set_committed_value(node, name, value)
        change = StateChange(
            node.id, node.name, move.old, move.old_reason, move.new, move.reason, now, row_id,
            tuple(item.assessment.golden),
        )  # fmt: skip
        if change.changed:
            state_changed(db, change)
        out.append(Recorded(row_id, move.new))
    return out


def _attestation_row(item: ToRecord, digest: str, now: dt.datetime) -> dict[str, Any]:
    ev, a = item.evidence, item.assessment
    return {
        "node_id": item.node.id, "created_at": now, "source": item.source, "status": a.status,
        "reason": a.reason, "verdict": None, "verdict_sha256": digest, "nonce": ev.nonce,
        "quote": ev.quote, "signature": ev.signature, "pcrs": dict(ev.pcrs),
        "event_log_sha256": ev.event_log_sha256, "agent_version": ev.agent_version,
        "reset_count": ev.reset_count, "restart_count": ev.restart_count, "reboot": item.reboot,
        "golden_versions": list(a.golden),
    }  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Move:
    values: dict[str, Any]
    old: NodeState
    old_reason: str
    new: NodeState
    reason: str


def _node_values(item: ToRecord, row_id: int, now: dt.datetime) -> _Move:
    """The node's new columns after this attestation (the state rules of ``record``)."""
    node, a = item.node, item.assessment
    values: dict[str, Any] = {
        "last_attestation_id": row_id,
        "golden_versions": list(a.golden),
        "booted_versions": list(a.booted),
    }
    quoted_at = item.quoted_at
    if a.status == VerdictStatus.TRUSTED and (node.last_success_at or quoted_at) <= quoted_at:
        values["last_success_at"] = quoted_at
    old = new = node.state
    reason = node.reason
    if node.state != NodeState.QUARANTINED:
        new, reason = NodeState.after(a.status), a.reason
        if new != old:
            values["state_since"] = now
        values["state"], values["reason"] = new, reason
    values.update(item.node_fields or {})
    return _Move(values, old, node.reason, new, reason)


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
