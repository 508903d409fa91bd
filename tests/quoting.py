"""Genuine quotes over chosen PCR values, signed by a software attestation key.

``verify_log`` takes only a ``VerifiedQuote``, which only ``verify_quote`` makes. Tests that need a
log checked against particular PCR values (the values a lying log must still match) get one here:
a real TPMS_ATTEST signed with a software ECDSA key and verified like any node's quote. This is the
attacker's best case — a genuine quote of the PCRs the TPM really holds — not a stand-in type.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from assay.algorithms import HashAlg
from assay.tpm2 import (
    Alg,
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

_AK_ATTRIBUTES = (
    ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
    | ObjectAttributes.USER_WITH_AUTH
    | ObjectAttributes.RESTRICTED
    | ObjectAttributes.SIGN_ENCRYPT
)


@functools.cache
def _ak() -> tuple[ec.EllipticCurvePrivateKey, TpmPublic]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = public_from_key(
        key.public_key(), attributes=_AK_ATTRIBUTES, scheme=Scheme(Alg.ECDSA, HashAlg.SHA256)
    )
    return key, public


def quote_of(pcrs: Mapping[HashAlg, Mapping[int, bytes]]) -> VerifiedQuote:
    """A verified quote of exactly ``pcrs`` (banks in the order given, PCRs ascending)."""
    key, ak = _ak()
    nonce = os.urandom(16)
    selection = {bank: sorted(values) for bank, values in pcrs.items()}
    digest = HashAlg.SHA256.hash(
        b"".join(pcrs[bank][p] for bank, indices in selection.items() for p in indices)
    )
    attest = marshal_quote_attest(selection, digest, nonce)
    r, s = decode_dss_signature(key.sign(attest, ec.ECDSA(hashes.SHA256())))
    sig = Signature(Alg.ECDSA, HashAlg.SHA256, b"", r.to_bytes(32, "big"), s.to_bytes(32, "big"))
    return verify_quote(attest, marshal_signature(sig), ak, nonce, pcrs)
