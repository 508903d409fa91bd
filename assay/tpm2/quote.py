"""Verify a TPM 2.0 quote: the only way to turn quote bytes and PCR values into a VerifiedQuote.

Failures raise ``VerificationFailed`` with a stable ``code`` (listed in ``verify_quote``); malformed
bytes raise ``MalformedEvidence``. Nothing is returned unless every step passed, so a caller that
holds a VerifiedQuote holds PCR values the AK signed over, for the nonce the caller chose.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..algorithms import HashAlg
from ..errors import MalformedEvidence, VerificationFailed
from .attest import PcrSelection, scan_attest, scan_signature
from .constants import TPM_GENERATED_VALUE, Alg, ObjectAttributes
from .public import TpmPublic

PcrValues = Mapping[HashAlg, Mapping[int, bytes]]

_AK_REQUIRED = int(ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.RESTRICTED)
_AND = int.__and__  # on an IntFlag, returns a plain int without building a new flag
_RSA_SCHEMES = frozenset({int(Alg.RSASSA), int(Alg.RSAPSS)})
_ECC_SCHEMES = frozenset({int(Alg.ECDSA)})
_U16 = struct.Struct(">H")
_HASHLIB: dict[HashAlg, Callable[[bytes], Any]] = {
    HashAlg.SHA1: hashlib.sha1,
    HashAlg.SHA256: hashlib.sha256,
    HashAlg.SHA384: hashlib.sha384,
    HashAlg.SHA512: hashlib.sha512,
    HashAlg.SM3_256: lambda data: hashlib.new("sm3", data),
}
_CLOCK = struct.Struct(">QIIBQ")
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


class _SignedAttestFields:
    """Fields read on demand from signed TPMS_ATTEST bytes (``attest``, ``clock_offset``)."""

    __slots__ = ()
    attest: bytes
    clock_offset: int
    hash_alg: HashAlg

    @property
    def nonce(self) -> bytes:
        """extraData, which verified equal to the caller's nonce."""
        signer_size = _U16.unpack_from(self.attest, 6)[0]
        return self.attest[10 + signer_size : self.clock_offset]

    @property
    def qualified_signer(self) -> bytes:
        return self.attest[8 : 8 + _U16.unpack_from(self.attest, 6)[0]]

    @property
    def clock(self) -> int:
        return int(_CLOCK.unpack_from(self.attest, self.clock_offset)[0])

    @property
    def reset_count(self) -> int:
        return int(_CLOCK.unpack_from(self.attest, self.clock_offset)[1])

    @property
    def restart_count(self) -> int:
        return int(_CLOCK.unpack_from(self.attest, self.clock_offset)[2])

    @property
    def safe(self) -> bool:
        return bool(_CLOCK.unpack_from(self.attest, self.clock_offset)[3])

    @property
    def firmware_version(self) -> int:
        return int(_CLOCK.unpack_from(self.attest, self.clock_offset)[4])

    @property
    def pcr_digest(self) -> bytes:
        return self.attest[len(self.attest) - self.hash_alg.digest_size :]


class _VerifiedQuoteFields(NamedTuple):
    attest: bytes
    """The signed TPMS_ATTEST bytes."""
    selection: PcrSelection
    hash_alg: HashAlg
    """The signature's hash, which is also the hash of the PCR digest."""
    values: tuple[bytes, ...]
    """The quoted PCR values in selection order (banks as quoted, PCRs ascending)."""
    clock_offset: int
    """Where TPMS_CLOCK_INFO starts in ``attest`` (extraData ends there)."""


class VerifiedQuote(_VerifiedQuoteFields, _SignedAttestFields):
    """A quote whose signature, magic, type, nonce, selection and PCR digest all verified.

    Every field is read from the signed TPMS_ATTEST bytes (``attest``) or is a PCR value covered
    by its digest; the clock counters are obfuscated per key outside the endorsement/platform
    hierarchy (Part 1 §36.7), but stable within a boot, which is what reboot detection needs.
    Only ``verify_quote`` makes one. A named tuple rather than a frozen dataclass, because one is
    built per quote and a tuple is built several times faster; it is as immutable, and like any
    tuple it also unpacks and compares equal to a plain tuple of its fields.
    """

    __slots__ = ()

    @property
    def pcrs(self) -> Mapping[HashAlg, Mapping[int, bytes]]:
        """The quoted values by bank and PCR index (exactly the selection, read-only)."""
        out: dict[HashAlg, Mapping[int, bytes]] = {}
        pos = 0
        for bank, indices in self.selection.banks:
            if indices:
                chunk = self.values[pos : pos + len(indices)]
                out[bank] = MappingProxyType(dict(zip(indices, chunk, strict=True)))
                pos += len(indices)
        return MappingProxyType(out)


@dataclass(frozen=True, slots=True)
class QuoteWithUncheckedPcrs(_SignedAttestFields):
    """Steps 1-7 of ``verify_quote`` passed, but NO PCR value was checked against the digest.

    For the command line without ``--pcrs`` only: it says who signed, for which nonce, which PCRs
    were selected, and the clock; it says nothing about what booted. Never appraise from it.
    """

    attest: bytes
    selection: PcrSelection
    hash_alg: HashAlg
    clock_offset: int


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

    The nonce's freshness (verifier-chosen, single use, short-lived) is the caller's job.
    Runs per quote, so it works on ``scan_*`` tuples and builds one object, at the end.
    """
    raw, hash_alg, selection, clock_at, digest_at = _verify_signed(attest, signature, ak, nonce)
    # 8. Selection equals the supplied pairs; 9. PCR digest.
    values = _select(selection, pcrs)
    expected = _HASHLIB[hash_alg](b"".join(values)).digest()
    if not hmac.compare_digest(raw[digest_at:], expected):
        raise VerificationFailed(
            f"quoted PCR digest {raw[digest_at:].hex()} is not the {hash_alg.bank} of the "
            f"supplied PCR values ({expected.hex()})",
            code="pcr_digest_mismatch",
        )
    # tuple.__new__ is VerifiedQuote(...) without the named tuple's Python-level __new__.
    return tuple.__new__(VerifiedQuote, (raw, selection, hash_alg, values, clock_at))


def verify_quote_without_pcrs(
    attest: bytes, signature: bytes, ak: TpmPublic, nonce: bytes
) -> QuoteWithUncheckedPcrs:
    """Steps 1-7 of ``verify_quote`` only: signature, magic, type and nonce; PCRs unchecked."""
    raw, hash_alg, selection, clock_at, _ = _verify_signed(attest, signature, ak, nonce)
    return QuoteWithUncheckedPcrs(raw, selection, hash_alg, clock_at)


def _verify_signed(
    attest: bytes, signature: bytes, ak: TpmPublic, nonce: bytes
) -> tuple[bytes, HashAlg, PcrSelection, int, int]:
    """Steps 1-7 of ``verify_quote``: (TPMS bytes, hash, selection, clock and digest offsets)."""
    # 1. Parse.
    raw, magic, kind, extra_at, clock_at, selection, digest_at = scan_attest(attest)
    sig_alg, hash_alg, sig, r, s = scan_signature(signature)
    # 2. Restricted signing AK; 3. scheme (precomputed per AK; the slow path says which failed).
    verifier = _ACCEPTED.get((ak.raw, ak.from_spki, sig_alg, hash_alg)) or _accept(
        ak, sig_alg, hash_alg
    )
    if verifier is None or hash_alg is None:
        _check_ak_attributes(ak)
        _check_scheme(sig_alg, hash_alg, ak)
        raise VerificationFailed("signature scheme refused", code="unsupported_scheme")
    # 4. Signature, checked as the AK's type says (a parsed AK's key is made from the same bytes),
    # which spares an isinstance against the key ABCs per quote.
    pad, algorithm, ecdsa = verifier
    try:
        if pad is not None:
            cast(rsa.RSAPublicKey, ak.key).verify(sig, raw, pad, algorithm)
        else:
            der = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
            cast(ec.EllipticCurvePublicKey, ak.key).verify(der, raw, cast(ec.ECDSA, ecdsa))
    except InvalidSignature:
        raise VerificationFailed(
            f"{Alg(sig_alg).name}/{hash_alg.bank} signature does not verify with the AK",
            code="bad_signature",
        ) from None
    # 5. Magic; 6. type.
    if magic != TPM_GENERATED_VALUE:
        raise VerificationFailed(f"magic is 0x{magic:08x}, not TPM_GENERATED", code="bad_magic")
    if selection is None:
        raise VerificationFailed(
            f"attestation type 0x{kind:04x} is not ATTEST_QUOTE", code="not_a_quote"
        )
    # 7. Nonce.
    if not hmac.compare_digest(raw[extra_at:clock_at], nonce):
        raise VerificationFailed(
            f"extraData {raw[extra_at:clock_at].hex() or '(empty)'} is not the nonce "
            f"{bytes(nonce).hex() or '(empty)'}",
            code="nonce_mismatch",
        )
    return raw, hash_alg, selection, clock_at, digest_at


_Verifier = tuple["padding.AsymmetricPadding | None", hashes.HashAlgorithm, "ec.ECDSA | None"]
"""How to check a signature: (RSA padding, hash, None) for RSA keys, (None, hash, ECDSA) for ECC."""
_ACCEPTED: dict[tuple[bytes, bool, int, HashAlg | None], _Verifier] = {}
_MAX_ACCEPTED = 65536


def _accept(ak: TpmPublic, sig_alg: int, hash_alg: HashAlg | None) -> _Verifier | None:
    """Steps 2-3: how to verify what ``ak`` signed with (sigAlg, hash), or None if it may not sign
    quotes so. Accepted pairs are cached by the AK's bytes: a verifier sees the same AKs over and
    over (a refused pair is worked out again: failures need not be fast)."""
    restricted = _AND(ak.object_attributes, _AK_REQUIRED) == _AK_REQUIRED
    schemes = _RSA_SCHEMES if ak.type == Alg.RSA else _ECC_SCHEMES
    if not (restricted or ak.from_spki) or sig_alg not in schemes or hash_alg not in _HASHES:
        return None
    fixed = ak.parameters.scheme
    if fixed.scheme != Alg.NULL and (fixed.scheme != sig_alg or fixed.hash_alg != hash_alg):
        return None
    assert hash_alg is not None  # it is in _HASHES
    verifier = _verifier(sig_alg, hash_alg)
    if len(_ACCEPTED) >= _MAX_ACCEPTED:
        _ACCEPTED.clear()
    _ACCEPTED[(ak.raw, ak.from_spki, sig_alg, hash_alg)] = verifier
    return verifier


def _verifier(sig_alg: int, hash_alg: HashAlg) -> _Verifier:
    if sig_alg == Alg.RSASSA:
        return _PKCS1, _HASHES[hash_alg], None
    if sig_alg == Alg.RSAPSS:
        return _PSS[hash_alg], _HASHES[hash_alg], None
    return None, _HASHES[hash_alg], _ECDSA[hash_alg]


def _check_ak_attributes(ak: TpmPublic) -> None:
    """Step 2: a restricted signing key signs only what the TPM generated itself."""
    if _AND(ak.object_attributes, _AK_REQUIRED) != _AK_REQUIRED and not ak.from_spki:
        raise VerificationFailed(
            f"AK attributes {ak.object_attributes!r} lack sign+restricted: it could sign forged "
            "attestations",
            code="ak_not_restricted",
        )


def _check_scheme(sig_alg: int, hash_alg: HashAlg | None, ak: TpmPublic) -> None:
    """Step 3: the scheme is one this AK may use and that we can verify."""
    allowed = _RSA_SCHEMES if ak.type == Alg.RSA else _ECC_SCHEMES
    if sig_alg not in allowed or hash_alg is None or hash_alg not in _HASHES:
        hash_name = hash_alg.bank if hash_alg else "none"
        raise VerificationFailed(
            f"signature scheme 0x{sig_alg:04x}/{hash_name} is not supported for a "
            f"{ak.type.name} AK",
            code="unsupported_scheme",
        )
    fixed = ak.parameters.scheme
    if fixed.scheme != Alg.NULL and (fixed.scheme != sig_alg or fixed.hash_alg != hash_alg):
        fixed_hash = fixed.hash_alg.bank if fixed.hash_alg else "none"
        raise VerificationFailed(
            f"signature scheme {Alg(sig_alg).name}/{hash_alg.bank} is not the AK's "
            f"{fixed.scheme.name}/{fixed_hash}",
            code="scheme_mismatch",
        )


_BankLayout = tuple[
    HashAlg, tuple[int, ...], Callable[[Mapping[int, bytes]], tuple[bytes, ...]], tuple[int, ...]
]
"""One selected bank: (bank, PCR indices, their values from a mapping in order, their sizes)."""
_LAYOUTS: dict[bytes, tuple[_BankLayout, ...]] = {}
_MAX_LAYOUTS = 256


def _layout(selection: PcrSelection) -> tuple[_BankLayout, ...]:
    """The non-empty banks of ``selection`` as ``_select`` reads them, cached by its bytes."""
    layout = tuple(
        (bank, indices, _getter(indices), (bank.digest_size,) * len(indices))
        for bank, indices in selection.banks
        if indices
    )
    if selection.raw:  # selections scanned from a quote; one built by hand has no bytes
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        _LAYOUTS[selection.raw] = layout
    return layout


def _getter(indices: tuple[int, ...]) -> Callable[[Mapping[int, bytes]], tuple[bytes, ...]]:
    if len(indices) == 1:  # itemgetter of one key returns the value, not a 1-tuple
        index = indices[0]
        return lambda values: (values[index],)
    return operator.itemgetter(*indices)


def _select(selection: PcrSelection, pcrs: PcrValues) -> tuple[bytes, ...]:
    """Step 8: the supplied values in selection order, if they are exactly the selection.

    Each value's size is checked here, although a wrong size would rarely give the right digest:
    values of 31 and 33 bytes concatenate to the right 64, and must not be "verified" (the
    service stores the values as supplied).
    """
    layout = _LAYOUTS.get(selection.raw) or _layout(selection)
    ordered: tuple[bytes, ...] = ()
    for bank, indices, take, sizes in layout:
        supplied = pcrs.get(bank)
        if supplied is None or len(supplied) != len(indices):
            raise _selection_mismatch(selection, pcrs)
        try:
            values = take(supplied)
        except KeyError:
            raise _selection_mismatch(selection, pcrs) from None
        if tuple(map(len, values)) != sizes:
            bad = next(i for i in indices if len(supplied[i]) != bank.digest_size)
            raise MalformedEvidence(
                f"{bank.bank} PCR {bad} value is {len(supplied[bad])} bytes, "
                f"not {bank.digest_size}",
                where="PCR values",
            )
        ordered += values
    if len(pcrs) != len(layout) and sum(1 for v in pcrs.values() if v) != len(layout):
        raise _selection_mismatch(selection, pcrs)
    return ordered


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
