"""When a re-attestation may reuse the node's stored verdict instead of appraising again.

A verdict is a pure function of: the verified log (its digest), the quoted PCR values (verified
by the quote's signature over their digest), the golden rows in force with the store's statuses
and the policy window (``in_force``), the verifier's bank and required PCRs, and the appraisal
code. ``verdict_key`` hashes exactly those; the node keeps the key of its last full attestation.
A new quote — already verified (signature, nonce) — reuses that verdict only when:

1. its key equals the node's (same log, PCR values, golden rows and statuses, policy window);
2. its boot counters equal the node's (reset and restart count: same boot, no resume);
3. its TPM clock is ``safe`` and later than the node's last quote's (no rollback, no replay of an
   older quote of the same boot).

Anything else is appraised in full, so reuse can never turn a changed input into an old answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import cast

from sqlalchemy.orm import Session

from assay.algorithms import HashAlg
from assay.tpm2 import VerifiedQuote
from verifier.appraisal import CompiledPolicy, VerdictStatus
from verifier.store import hotpath
from verifier.store.hotpath import NodeSnapshot
from verifier.store.models import NodeState

from .context import Services
from .golden_policy import Assessment, GoldenRowLike, assessment_of, rows_key

APPRAISAL_EPOCH = "assay-appraisal-2026-12"
"""Part of every verdict key: change it when an appraisal could answer differently for the same
inputs (a new check), so stored verdicts stop being reused after an upgrade."""


def verdict_key(
    svc: Services,
    quote: VerifiedQuote,
    log_hex: str,
    rows: Sequence[GoldenRowLike],
    policy: CompiledPolicy,
) -> str:
    """The SHA-256 (hex) of everything the verdict for this quote and log depends on."""
    bank: HashAlg = svc.config.hash_alg
    h = hashlib.sha256()
    h.update(f"{APPRAISAL_EPOCH}|{bank.bank}|{sorted(svc.config.pcrs)}|{log_hex}|".encode())
    for alg, values in sorted(quote.pcrs.items(), key=lambda kv: int(kv[0])):
        for pcr, value in sorted(values.items()):
            h.update(b"%d:%d:" % (int(alg), pcr) + value)
    h.update(repr((rows_key(rows), tuple(policy.in_force))).encode())
    return h.hexdigest()


def same_boot_and_later(snap: NodeSnapshot, quote: VerifiedQuote) -> bool:
    """Steps 2–3: the same boot as the node's last quote, and a TPM clock that moved forward."""
    if snap.last_reset_count != quote.reset_count:
        return False
    if snap.last_restart_count != quote.restart_count:
        return False
    return quote.safe and snap.last_clock is not None and quote.clock > snap.last_clock


def reusable(
    svc: Services, snap: NodeSnapshot, quote: VerifiedQuote, key: str
) -> Assessment | None:
    """The node's stored assessment when this verified quote may reuse it (steps 1–3), else None."""
    if snap.verdict_key != key or snap.last_verdict_sha256 is None:
        return None
    if not same_boot_and_later(snap, quote):
        return None
    memo = (snap.last_verdict_sha256, tuple(snap.golden_versions))
    known = svc.reused.get(memo)
    if known is not None:
        return cast(Assessment, known)
    doc = svc.verdicts.get(snap.last_verdict_sha256)
    if doc is None:
        return None  # prefetch_verdict found none: appraise
    made = assessment_of(dict(doc), snap.golden_versions)
    svc.reused.put(memo, made)  # a verdict document never changes: nor does what it records
    return made


def prefetch_verdict(svc: Services, db: Session, snap: NodeSnapshot) -> None:
    """Load the node's last verdict document into the process cache (another instance wrote it)."""
    digest = snap.last_verdict_sha256
    if digest is None or snap.verdict_key is None or digest in svc.verdicts:
        return
    doc = hotpath.get_verdict(db, digest)
    if doc is not None:
        svc.verdicts.put(digest, doc)


def compact(snap: NodeSnapshot, a: Assessment) -> bool:
    """Whether a reused verdict is only counted (``attestation_repeats``): a trusted verdict that
    leaves the node's state as it is. Failures and state changes always get a full record."""
    if a.status != VerdictStatus.TRUSTED or snap.last_attestation_id is None:
        return False
    return snap.state in (NodeState.TRUSTED, NodeState.QUARANTINED)
