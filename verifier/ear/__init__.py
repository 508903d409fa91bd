"""Signed attestation results: IETF RATS EAR (draft-ietf-rats-ear-04) as ES256 JWTs.

``claims`` is the claim set (what a verdict says, in the draft's vocabulary), ``token`` signs and
verifies it with a maintained JOSE library (joserfc). Pure: no store, no HTTP, so a relying party
checks a token offline with ``assay-verifier ear verify``.
"""

from __future__ import annotations

from .claims import (
    EAR_PROFILE,
    Appraisal,
    EarClaims,
    EarStatus,
    TrustVector,
    appraisal_for,
)
from .token import VerifiedEar, sign_ear, verify_ear

__all__ = [
    "EAR_PROFILE",
    "Appraisal",
    "EarClaims",
    "EarStatus",
    "TrustVector",
    "VerifiedEar",
    "appraisal_for",
    "sign_ear",
    "verify_ear",
]
