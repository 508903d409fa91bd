"""TPM 2.0 wire structures, quote verification and MakeCredential (pure Python + cryptography).

The verifier must not need libtss2, so nothing here imports tpm2-pytss (tests use it as an oracle).
"""

from __future__ import annotations

from .attest import (
    Attest,
    ClockInfo,
    PcrSelection,
    QuoteInfo,
    Signature,
    marshal_pcr_selection,
    marshal_quote_attest,
    marshal_signature,
    parse_attest,
    parse_pcr_selection,
    parse_signature,
)
from .constants import TPM_GENERATED_VALUE, Alg, AttestType, EccCurve, ObjectAttributes
from .credential import make_credential
from .public import (
    EccParms,
    EccPoint,
    RsaParms,
    Scheme,
    SymDef,
    TpmPublic,
    marshal_public,
    parse_ak,
    parse_public,
    parse_public2b,
    parse_public_area,
    public_from_key,
)
from .quote import QuoteWithUncheckedPcrs, VerifiedQuote, verify_quote, verify_quote_without_pcrs

__all__ = [
    "TPM_GENERATED_VALUE",
    "Alg",
    "Attest",
    "AttestType",
    "ClockInfo",
    "EccCurve",
    "EccParms",
    "EccPoint",
    "ObjectAttributes",
    "PcrSelection",
    "QuoteInfo",
    "QuoteWithUncheckedPcrs",
    "RsaParms",
    "Scheme",
    "Signature",
    "SymDef",
    "TpmPublic",
    "VerifiedQuote",
    "make_credential",
    "marshal_pcr_selection",
    "marshal_public",
    "marshal_quote_attest",
    "marshal_signature",
    "parse_ak",
    "parse_attest",
    "parse_pcr_selection",
    "parse_public",
    "parse_public2b",
    "parse_public_area",
    "parse_signature",
    "public_from_key",
    "verify_quote",
    "verify_quote_without_pcrs",
]
