"""Quotes signed by a software attestation key, verified like any node's (scaffolding).

``verify_log`` takes only a ``VerifiedQuote``, which only ``verify_quote`` makes. Tests that need a
log checked against chosen PCR values (the values a lying log must still match), and the load
generator, sign a real TPMS_ATTEST with an ECDSA P-256 key held in software. It proves nothing about
a TPM; correctness tests of the TPM path use swtpm.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from assay.algorithms import HashAlg
from assay.tpm2 import (
    Alg,
    ClockInfo,
    ObjectAttributes,
    Scheme,
    Signature,
    TpmPublic,
    VerifiedQuote,
    marshal_quote_attest,
    marshal_signature,
    public_from_key,
    verify_quote,
)

AK_ATTRIBUTES = (
    ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
    | ObjectAttributes.USER_WITH_AUTH
    | ObjectAttributes.RESTRICTED
    | ObjectAttributes.SIGN_ENCRYPT
)
PcrValues = Mapping[HashAlg, Mapping[int, bytes]]
CLOCK = ClockInfo(1000, 1, 0, True)  # clock, reset count, restart count, safe


class SoftwareAk:
    """A restricted ECDSA signing key with a TPM2B_PUBLIC, quoting whatever PCR values it is given."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.public: TpmPublic = public_from_key(
            self._key.public_key(),
            attributes=AK_ATTRIBUTES,
            scheme=Scheme(Alg.ECDSA, HashAlg.SHA256),
        )

    def quote(
        self, pcrs: PcrValues, nonce: bytes, *, clock_info: ClockInfo = CLOCK
    ) -> tuple[bytes, bytes]:
        """(TPMS_ATTEST, TPMT_SIGNATURE) of a quote of exactly ``pcrs`` (banks in the order given,
        PCRs ascending) for ``nonce``."""
        return self.quote_of(QuoteOf.values(pcrs), nonce, clock_info=clock_info)

    def quote_of(
        self, of: QuoteOf, nonce: bytes, *, clock_info: ClockInfo = CLOCK
    ) -> tuple[bytes, bytes]:
        """``quote`` of values whose selection and digest are computed already (the load
        generator quotes the same values thousands of times)."""
        attest = marshal_quote_attest(of.selection, of.digest, nonce, clock_info=clock_info)
        r, s = decode_dss_signature(self._key.sign(attest, _ECDSA_SHA256))
        sig = Signature(
            Alg.ECDSA, HashAlg.SHA256, b"", r.to_bytes(32, "big"), s.to_bytes(32, "big")
        )
        return attest, marshal_signature(sig)


@dataclass(frozen=True, slots=True)
class QuoteOf:
    """What a quote of given PCR values covers: the selection (banks in the order given, PCRs
    ascending) and the SHA-256 digest of the selected values."""

    selection: dict[HashAlg, list[int]]
    digest: bytes

    @classmethod
    def values(cls, pcrs: PcrValues) -> QuoteOf:
        selection = {bank: sorted(values) for bank, values in pcrs.items()}
        digest = HashAlg.SHA256.hash(
            b"".join(pcrs[bank][p] for bank, indices in selection.items() for p in indices)
        )
        return cls(selection, digest)


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


@functools.cache
def _shared() -> SoftwareAk:
    return SoftwareAk()


def quote_of(pcrs: PcrValues) -> VerifiedQuote:
    """A verified quote of exactly ``pcrs``: the attacker's best case, a genuine quote of the
    values the TPM really holds."""
    nonce = os.urandom(16)
    attest, sig = _shared().quote(pcrs, nonce)
    return verify_quote(attest, sig, _shared().public, nonce, pcrs)
