"""Verify a TPM 2.0 quote: the only way to turn quote bytes and PCR values into a VerifiedQuote.

Failures raise ``VerificationFailed`` with a stable ``code`` (listed in ``verify_quote``); malformed
bytes raise ``MalformedEvidence``. Nothing is returned unless every step passed, so a caller that
holds a VerifiedQuote holds PCR values the AK signed over, for the nonce the caller chose.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..algorithms import HashAlg
from ..errors import MalformedEvidence, VerificationFailed
from .attest import PcrSelection, Signature, parse_attest, parse_signature
from .constants import TPM_GENERATED_VALUE, Alg, AttestType, ObjectAttributes
from .public import TpmPublic

PcrValues = Mapping[HashAlg, Mapping[int, bytes]]

_AK_REQUIRED = ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.RESTRICTED
_HASHES: dict[HashAlg, hashes.HashAlgorithm] = {
    HashAlg.SHA1: hashes.SHA1(),  # noqa: S303 - SHA-1 quotes exist (the policy decides on banks)
    HashAlg.SHA256: hashes.SHA256(),
    HashAlg.SHA384: hashes.SHA384(),
    HashAlg.SHA512: hashes.SHA512(),
    HashAlg.SM3_256: hashes.SM3(),
}
_PKCS1 = padding.PKCS1v15()
# TPM RSAPSS signatures use a salt as long as the digest (swtpm/libtpms, the reference code);
# the "maximum salt" variant some verifiers also accept is not accepted here.
_PSS = {alg: padding.PSS(padding.MGF1(h), h.digest_size) for alg, h in _HASHES.items()}
_ECDSA = {alg: ec.ECDSA(h) for alg, h in _HASHES.items()}


@dataclass(frozen=True, slots=True)
class VerifiedQuote:
    """A quote whose signature, magic, type, nonce, selection and PCR digest all verified.

    ``pcrs`` holds exactly the quoted (bank, PCR) values; the clock fields are as signed (obfuscated
    per key outside the endorsement/platform hierarchy, but stable within a boot).
    """

    pcrs: Mapping[HashAlg, Mapping[int, bytes]]
    selection: PcrSelection
    nonce: bytes
    reset_count: int
    restart_count: int
    safe: bool
    clock: int
    firmware_version: int
    qualified_signer: bytes
    attest: bytes
    """The signed TPMS_ATTEST bytes."""
    hash_alg: HashAlg
    """The signature's hash, which is also the hash of the PCR digest."""
    pcr_digest: bytes


def verify_quote(
    attest: bytes, signature: bytes, ak: TpmPublic, nonce: bytes, pcrs: PcrValues
) -> VerifiedQuote:
    """Verify a quote made by ``ak`` for ``nonce`` over exactly the PCR values ``pcrs``.

    ``attest`` is a TPMS_ATTEST or TPM2B_ATTEST (detected), ``signature`` a TPMT_SIGNATURE.
    Steps (the code is labelled with the same numbers; the failure code is in brackets):

    1. Parse attest and signature (MalformedEvidence).
    2. The AK is a restricted signing key, so the TPM signs with it only what it generated
       itself [``ak_not_restricted``]; a stand-in AK from PEM/DER carries no attributes to check.
    3. The signature scheme fits the key (RSASSA/RSAPSS for RSA, ECDSA for ECC) with a known
       hash [``unsupported_scheme``] and equals the AK's scheme and hash if it fixes one
       [``scheme_mismatch``].
    4. The signature over the TPMS_ATTEST bytes verifies with the AK [``bad_signature``].
    5. magic is TPM_GENERATED [``bad_magic``]; 6. type is ATTEST_QUOTE [``not_a_quote``].
    7. extraData equals the nonce, compared in constant time [``nonce_mismatch``].
    8. The quoted selection equals exactly the supplied (bank, PCR) pairs: no value that the quote
       does not cover, none missing (CVE-2022-0317) [``pcr_selection_mismatch``].
    9. pcrDigest equals H_sig(supplied values in selection order: banks as quoted, PCRs
       ascending) [``pcr_digest_mismatch``].
    """
    # 1. Parse.
    parsed = parse_attest(attest)
    sig = parse_signature(signature)
    # 2. Restricted signing AK.
    if not ak.from_spki and (ak.object_attributes & _AK_REQUIRED) != _AK_REQUIRED:
        raise VerificationFailed(
            f"AK attributes {ak.object_attributes!r} lack sign+restricted: it could sign forged "
            "attestations",
            code="ak_not_restricted",
        )
    # 3. Scheme; 4. signature.
    hash_alg = _check_scheme(sig, ak)
    _check_signature(sig, hash_alg, ak, parsed.raw)
    # 5. Magic; 6. type.
    if parsed.magic != TPM_GENERATED_VALUE:
        raise VerificationFailed(
            f"magic is 0x{parsed.magic:08x}, not TPM_GENERATED", code="bad_magic"
        )
    quote = parsed.quote
    if parsed.type != AttestType.QUOTE or quote is None:
        raise VerificationFailed(
            f"attestation type 0x{parsed.type:04x} is not ATTEST_QUOTE", code="not_a_quote"
        )
    # 7. Nonce.
    if not hmac.compare_digest(parsed.extra_data, bytes(nonce)):
        raise VerificationFailed(
            f"extraData {parsed.extra_data.hex() or '(empty)'} is not the nonce "
            f"{bytes(nonce).hex() or '(empty)'}",
            code="nonce_mismatch",
        )
    # 8. Selection equals the supplied pairs; 9. PCR digest.
    values, ordered = _select(quote.selection, pcrs)
    expected = hash_alg.hash(b"".join(ordered))
    if not hmac.compare_digest(quote.pcr_digest, expected):
        raise VerificationFailed(
            f"quoted PCR digest {quote.pcr_digest.hex()} is not the {hash_alg.bank} of the "
            f"supplied PCR values ({expected.hex()})",
            code="pcr_digest_mismatch",
        )
    ci = parsed.clock_info
    return VerifiedQuote(
        values,
        quote.selection,
        parsed.extra_data,
        ci.reset_count,
        ci.restart_count,
        ci.safe,
        ci.clock,
        parsed.firmware_version,
        parsed.qualified_signer,
        parsed.raw,
        hash_alg,
        quote.pcr_digest,
    )


def _check_scheme(sig: Signature, ak: TpmPublic) -> HashAlg:
    """Step 3: the hash the signature uses, if the scheme is one this AK may and we can verify."""
    allowed = (Alg.RSASSA, Alg.RSAPSS) if ak.type == Alg.RSA else (Alg.ECDSA,)
    if sig.scheme not in allowed or sig.hash_alg is None or sig.hash_alg not in _HASHES:
        hash_name = sig.hash_alg.bank if sig.hash_alg else "none"
        raise VerificationFailed(
            f"signature scheme {sig.scheme.name}/{hash_name} is not supported for a "
            f"{ak.type.name} AK",
            code="unsupported_scheme",
        )
    fixed = ak.scheme
    if fixed.scheme != Alg.NULL and (fixed.scheme != sig.scheme or fixed.hash_alg != sig.hash_alg):
        fixed_hash = fixed.hash_alg.bank if fixed.hash_alg else "none"
        raise VerificationFailed(
            f"signature scheme {sig.scheme.name}/{sig.hash_alg.bank} is not the AK's "
            f"{fixed.scheme.name}/{fixed_hash}",
            code="scheme_mismatch",
        )
    return sig.hash_alg


def _check_signature(sig: Signature, hash_alg: HashAlg, ak: TpmPublic, signed: bytes) -> None:
    """Step 4: verify with ``cryptography``; r||s from the TPM become a DER ECDSA signature."""
    key = ak.key
    try:
        if isinstance(key, rsa.RSAPublicKey):
            pad = _PKCS1 if sig.scheme == Alg.RSASSA else _PSS[hash_alg]
            key.verify(sig.sig, signed, pad, _HASHES[hash_alg])
        else:
            der = encode_dss_signature(int.from_bytes(sig.r, "big"), int.from_bytes(sig.s, "big"))
            key.verify(der, signed, _ECDSA[hash_alg])
    except InvalidSignature:
        raise VerificationFailed(
            f"{sig.scheme.name}/{hash_alg.bank} signature does not verify with the AK",
            code="bad_signature",
        ) from None


def _select(
    selection: PcrSelection, pcrs: PcrValues
) -> tuple[Mapping[HashAlg, Mapping[int, bytes]], list[bytes]]:
    """Step 8: the supplied values as an immutable copy, and in selection order."""
    ordered: list[bytes] = []
    result: dict[HashAlg, Mapping[int, bytes]] = {}
    for bank, indices in selection.banks:
        if not indices:
            continue
        supplied = pcrs.get(bank)
        if supplied is None or len(supplied) != len(indices):
            raise _selection_mismatch(selection, pcrs)
        try:
            values = [supplied[i] for i in indices]
        except KeyError:
            raise _selection_mismatch(selection, pcrs) from None
        if set(map(len, values)) != {bank.digest_size}:
            bad = next(
                i for i, v in zip(indices, values, strict=True) if len(v) != bank.digest_size
            )
            raise MalformedEvidence(
                f"{bank.bank} PCR {bad} value is {len(supplied[bad])} bytes, "
                f"not {bank.digest_size}",
                where="PCR values",
            )
        ordered += values
        result[bank] = MappingProxyType(dict(zip(indices, values, strict=True)))
    if sum(1 for v in pcrs.values() if v) != len(result):
        raise _selection_mismatch(selection, pcrs)
    return MappingProxyType(result), ordered


def _selection_mismatch(selection: PcrSelection, pcrs: PcrValues) -> VerificationFailed:
    quoted = selection.pairs()
    supplied = frozenset((bank, pcr) for bank, values in pcrs.items() for pcr in values)
    return VerificationFailed(
        f"quote selects {_fmt(quoted)}; supplied values not quoted: {_fmt(supplied - quoted)}; "
        f"quoted but not supplied: {_fmt(quoted - supplied)}",
        code="pcr_selection_mismatch",
    )


def _fmt(pairs: frozenset[tuple[HashAlg, int]]) -> str:
    if not pairs:
        return "none"
    banks: dict[HashAlg, list[int]] = {}
    for bank, pcr in sorted(pairs):
        banks.setdefault(HashAlg(bank), []).append(pcr)
    return " ".join(f"{bank.bank}:{','.join(map(str, pcrs))}" for bank, pcrs in banks.items())
