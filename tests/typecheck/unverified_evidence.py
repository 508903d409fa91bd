"""Code that must NOT type-check: unverified evidence where verified evidence is required.

``tests/test_trust_types.py`` runs ``mypy --strict`` on this file and expects an error on exactly the
lines marked ``# rejected``. (Not collected by pytest; never imported.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from assay.algorithms import HashAlg
from assay.eventlog import (
    ReviewedBootLog,
    VerifiedBootLog,
    assume_quoted_for_review,
    parse_event_log,
    replay,
    verify_log,
)
from assay.tpm2 import verify_quote_without_pcrs
from verifier.appraisal import CompiledPolicy
from verifier.service.golden_policy import assess  # the service's appraisal of a node


@dataclass(frozen=True)
class EvidenceAsSent:
    """What a node claims: PCR values nobody has checked against a signature."""

    pcrs: Mapping[HashAlg, Mapping[int, bytes]]


def forged(
    log_bytes: bytes, claimed: EvidenceAsSent, attest: bytes, sig: bytes, policy: CompiledPolicy
) -> None:
    log = parse_event_log(log_bytes)
    bank = HashAlg.SHA256
    verify_log(log, claimed, bank)  # rejected
    verify_log(log, replay(log), bank)  # rejected
    unchecked = verify_quote_without_pcrs(attest, sig, None, b"")  # type: ignore[arg-type]
    verify_log(log, unchecked, bank)  # rejected
    node_view: VerifiedBootLog = assume_quoted_for_review(log, bank)  # rejected
    reviewed: ReviewedBootLog = assume_quoted_for_review(log, bank)
    admitted: VerifiedBootLog = reviewed  # rejected
    assess(reviewed, policy)  # rejected
    del node_view, admitted
