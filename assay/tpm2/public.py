"""TPMT_PUBLIC / TPM2B_PUBLIC: a TPM key's public area, its TPM Name and its ``cryptography`` key.

Parsed from untrusted bytes (an agent sends its AK and EK); nothing here says the key is trusted.
The Name is ``nameAlg (u16) || H_nameAlg(TPMT_PUBLIC bytes)`` (Part 1 §16), computed once on parse.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .._reader import Reader
from ..algorithms import HashAlg
from ..errors import MalformedEvidence
from .constants import Alg, EccCurve, ObjectAttributes

MAX_PUBLIC_SIZE = 1024
"""Largest TPMT_PUBLIC accepted: RSA-4096 with a SHA-512 policy is about 610 bytes."""

RSA_KEY_BITS = frozenset({1024, 2048, 3072, 4096})
DEFAULT_RSA_EXPONENT = 65537

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_CURVES: dict[int, tuple[ec.EllipticCurve, int]] = {
    EccCurve.NIST_P256: (ec.SECP256R1(), 32),
    EccCurve.NIST_P384: (ec.SECP384R1(), 48),
    EccCurve.NIST_P521: (ec.SECP521R1(), 66),
}
_CURVE_IDS = {
    "secp256r1": EccCurve.NIST_P256,
    "secp384r1": EccCurve.NIST_P384,
    "secp521r1": EccCurve.NIST_P521,
}

# Which asymmetric schemes carry a hashAlg (TPMU_ASYM_SCHEME); RSAES carries nothing, ECDAA a count.
_SCHEMES_WITH_HASH = frozenset(
    {
        Alg.RSASSA,
        Alg.RSAPSS,
        Alg.OAEP,
        Alg.ECDSA,
        Alg.ECDH,
        Alg.SM2,
        Alg.ECSCHNORR,
        Alg.ECMQV,
        Alg.ECDAA,
    }
)
_KDF_SCHEMES = frozenset({Alg.KDF1_SP800_56A, Alg.KDF2, Alg.KDF1_SP800_108})
_SYM_ALGS = frozenset({Alg.AES, Alg.SM4, Alg.CAMELLIA})
_SYM_MODES = frozenset({Alg.CTR, Alg.OFB, Alg.CBC, Alg.CFB, Alg.ECB, Alg.NULL})


@dataclass(frozen=True, slots=True)
class SymDef:
    """TPMT_SYM_DEF_OBJECT: a storage key's symmetric cipher (``Alg.NULL`` for signing keys)."""

    algorithm: Alg
    key_bits: int = 0
    mode: Alg = Alg.NULL


@dataclass(frozen=True, slots=True)
class Scheme:
    """TPMT_{RSA,ECC,KDF}_SCHEME: ``Alg.NULL`` means the key does not fix a scheme."""

    scheme: Alg
    hash_alg: HashAlg | None = None
    count: int = 0


@dataclass(frozen=True, slots=True)
class RsaParms:
    symmetric: SymDef
    scheme: Scheme
    key_bits: int
    exponent: int
    """As marshalled: 0 means the default 65537."""


@dataclass(frozen=True, slots=True)
class EccParms:
    symmetric: SymDef
    scheme: Scheme
    curve: EccCurve
    kdf: Scheme


@dataclass(frozen=True, slots=True)
class EccPoint:
    x: bytes
    y: bytes


@dataclass(frozen=True, slots=True)
class TpmPublic:
    """A parsed TPMT_PUBLIC of an RSA or ECC key (unverified: trust comes from enrollment)."""

    type: Alg
    name_alg: HashAlg
    object_attributes: ObjectAttributes
    auth_policy: bytes
    parameters: RsaParms | EccParms
    unique: bytes | EccPoint
    """RSA modulus, or the ECC public point."""
    raw: bytes
    """The TPMT_PUBLIC bytes exactly as received."""
    name: bytes
    key: PublicKey = field(repr=False, compare=False)
    from_spki: bool = False
    """True when made from a PEM/DER SubjectPublicKeyInfo: then the attributes, scheme and Name
    are stand-ins (sign, no scheme, SHA-256), not what the TPM holds."""

    def public_key(self) -> PublicKey:
        """The ``cryptography`` public key (built once, at parse time)."""
        return self.key

    def to_crypto_key(self) -> PublicKey:
        return self.key

    @property
    def scheme(self) -> Scheme:
        return self.parameters.scheme

    @property
    def symmetric(self) -> SymDef:
        return self.parameters.symmetric


def parse_public(data: bytes) -> TpmPublic:
    """Parse a TPM2B_PUBLIC or a bare TPMT_PUBLIC, detected as follows.

    It is a TPM2B_PUBLIC when the first u16 equals the length of the rest and the u16 after it is
    an object type (RSA 0x0001 or ECC 0x0023); otherwise it is a TPMT_PUBLIC. Results are cached
    by their bytes (they are immutable): the verifier parses each node's stored AK per quote, and
    building the ``cryptography`` key costs more than verifying a signature with it.
    """
    return _parse_public_cached(bytes(data))


@functools.lru_cache(maxsize=16384)
def _parse_public_cached(data: bytes) -> TpmPublic:
    if len(data) > MAX_PUBLIC_SIZE + 2:
        raise MalformedEvidence(
            f"{len(data)} bytes, larger than {MAX_PUBLIC_SIZE}", where="TPM2B_PUBLIC", offset=0
        )
    if len(data) >= 4:
        size, kind = struct.unpack_from(">HH", data)
        if size == len(data) - 2 and kind in (Alg.RSA, Alg.ECC):
            return parse_public2b(data)
    return parse_public_area(data)


def parse_public2b(data: bytes) -> TpmPublic:
    """Parse exactly one TPM2B_PUBLIC (u16 size, then a TPMT_PUBLIC of that size)."""
    data = bytes(data)
    rd = Reader(data, "TPM2B_PUBLIC")
    area = rd.tpm2b("TPM2B_PUBLIC", max_size=MAX_PUBLIC_SIZE)
    rd.expect_end("TPM2B_PUBLIC")
    if not area:
        raise rd.fail("empty public area", 0)
    return _parse_area(data, "TPM2B_PUBLIC", start=2)


def parse_public_area(data: bytes) -> TpmPublic:
    """Parse exactly one TPMT_PUBLIC."""
    data = bytes(data)
    if len(data) > MAX_PUBLIC_SIZE:
        raise MalformedEvidence(
            f"{len(data)} bytes, larger than {MAX_PUBLIC_SIZE}", where="TPMT_PUBLIC", offset=0
        )
    return _parse_area(data, "TPMT_PUBLIC", start=0)


def _parse_area(data: bytes, where: str, *, start: int) -> TpmPublic:
    """Parse the TPMT_PUBLIC that fills ``data[start:]`` (error offsets count from ``data[0]``)."""
    rd = Reader(data, where, start=start)
    kind = rd.u16be("type")
    if kind not in (Alg.RSA, Alg.ECC):
        raise rd.fail(f"unsupported object type 0x{kind:04x} (only RSA and ECC keys)", start)
    name_alg = HashAlg.from_id(rd.u16be("nameAlg"), where=where, offset=start + 2)
    attributes = ObjectAttributes(rd.u32be("objectAttributes"))
    auth_policy = rd.tpm2b("authPolicy", max_size=64)
    parms: RsaParms | EccParms
    unique: bytes | EccPoint
    if kind == Alg.RSA:
        parms = _rsa_parms(rd)
        unique = rd.tpm2b("unique.rsa", max_size=512)
    else:
        parms = _ecc_parms(rd)
        x = rd.tpm2b("unique.ecc.x", max_size=66)
        unique = EccPoint(x, rd.tpm2b("unique.ecc.y", max_size=66))
    rd.expect_end(where)
    key = _crypto_key(parms, unique, where)
    area = data[start:]
    name = struct.pack(">H", name_alg) + name_alg.hash(area)
    return TpmPublic(Alg(kind), name_alg, attributes, auth_policy, parms, unique, area, name, key)


def _alg(rd: Reader, what: str, allowed: frozenset[Alg]) -> Alg:
    pos = rd.pos
    value = rd.u16be(what)
    if value not in allowed:
        raise rd.fail(f"{what}: unsupported algorithm 0x{value:04x}", pos)
    return Alg(value)


def _symmetric(rd: Reader) -> SymDef:
    algorithm = _alg(rd, "symmetric.algorithm", _SYM_ALGS | {Alg.NULL})
    if algorithm == Alg.NULL:
        return SymDef(Alg.NULL)
    key_bits = rd.u16be("symmetric.keyBits")
    return SymDef(algorithm, key_bits, _alg(rd, "symmetric.mode", _SYM_MODES))


def _scheme(rd: Reader, what: str, allowed: frozenset[Alg]) -> Scheme:
    scheme = _alg(rd, what, allowed | {Alg.NULL})
    if scheme == Alg.NULL or scheme not in _SCHEMES_WITH_HASH | _KDF_SCHEMES:
        return Scheme(scheme)
    pos = rd.pos
    hash_alg = HashAlg.from_id(rd.u16be(what + ".hashAlg"), where=rd.where, offset=pos)
    count = rd.u16be(what + ".count") if scheme == Alg.ECDAA else 0
    return Scheme(scheme, hash_alg, count)


def _rsa_parms(rd: Reader) -> RsaParms:
    symmetric = _symmetric(rd)
    scheme = _scheme(rd, "scheme", frozenset({Alg.RSASSA, Alg.RSAPSS, Alg.RSAES, Alg.OAEP}))
    pos = rd.pos
    key_bits = rd.u16be("keyBits")
    if key_bits not in RSA_KEY_BITS:
        raise rd.fail(f"unsupported RSA key size {key_bits} bits", pos)
    return RsaParms(symmetric, scheme, key_bits, rd.u32be("exponent"))


def _ecc_parms(rd: Reader) -> EccParms:
    symmetric = _symmetric(rd)
    ecc_schemes = frozenset({Alg.ECDSA, Alg.ECDH, Alg.ECDAA, Alg.SM2, Alg.ECSCHNORR, Alg.ECMQV})
    scheme = _scheme(rd, "scheme", ecc_schemes)
    pos = rd.pos
    curve = rd.u16be("curveID")
    if curve not in _CURVES:
        raise rd.fail(f"unsupported ECC curve 0x{curve:04x}", pos)
    kdf = _scheme(rd, "kdf", _KDF_SCHEMES)
    return EccParms(symmetric, scheme, EccCurve(curve), kdf)


def _crypto_key(parms: RsaParms | EccParms, unique: bytes | EccPoint, where: str) -> PublicKey:
    try:
        if isinstance(parms, RsaParms):
            assert isinstance(unique, bytes)
            if len(unique) != parms.key_bits // 8:
                raise MalformedEvidence(
                    f"RSA modulus is {len(unique)} bytes, keyBits says {parms.key_bits}",
                    where=where,
                )
            exponent = parms.exponent or DEFAULT_RSA_EXPONENT
            return rsa.RSAPublicNumbers(exponent, int.from_bytes(unique, "big")).public_key()
        assert isinstance(unique, EccPoint)
        curve, size = _CURVES[parms.curve]
        if len(unique.x) > size or len(unique.y) > size:
            raise MalformedEvidence(f"ECC point coordinate longer than {size} bytes", where=where)
        point = b"\x04" + unique.x.rjust(size, b"\0") + unique.y.rjust(size, b"\0")
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise MalformedEvidence(f"not a usable public key: {exc}", where=where) from None


def marshal_public(pub: TpmPublic) -> bytes:
    """The TPM2B_PUBLIC of a parsed key (its TPMT_PUBLIC bytes as received, with a size)."""
    return struct.pack(">H", len(pub.raw)) + pub.raw


def public_from_key(
    key: PublicKey,
    *,
    name_alg: HashAlg = HashAlg.SHA256,
    attributes: ObjectAttributes = ObjectAttributes.SIGN_ENCRYPT,
    scheme: Scheme | None = None,
    from_spki: bool = False,
) -> TpmPublic:
    """Marshal a TPMT_PUBLIC for a ``cryptography`` key and parse it back.

    For tests, benchmarks and PEM AKs: the result says what the caller claims, not what a TPM holds.
    """
    scheme = scheme or Scheme(Alg.NULL)
    body = struct.pack(
        ">HHIH", Alg.RSA if isinstance(key, rsa.RSAPublicKey) else Alg.ECC, name_alg, attributes, 0
    )
    body += struct.pack(">H", Alg.NULL) + _marshal_scheme(scheme)
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        exponent = 0 if numbers.e == DEFAULT_RSA_EXPONENT else numbers.e
        modulus = numbers.n.to_bytes(key.key_size // 8, "big")
        body += struct.pack(">HIH", key.key_size, exponent, len(modulus)) + modulus
    else:
        curve_id = _CURVE_IDS.get(key.curve.name)
        if curve_id is None:
            raise MalformedEvidence(f"unsupported ECC curve {key.curve.name}", where="public key")
        size = _CURVES[curve_id][1]
        nums = key.public_numbers()
        x, y = nums.x.to_bytes(size, "big"), nums.y.to_bytes(size, "big")
        body += struct.pack(">HH", curve_id, Alg.NULL)
        body += struct.pack(">H", size) + x + struct.pack(">H", size) + y
    pub = parse_public_area(body)
    if from_spki:
        return TpmPublic(
            pub.type,
            pub.name_alg,
            pub.object_attributes,
            pub.auth_policy,
            pub.parameters,
            pub.unique,
            pub.raw,
            pub.name,
            pub.key,
            from_spki=True,
        )
    return pub


def _marshal_scheme(scheme: Scheme) -> bytes:
    if scheme.hash_alg is None:
        return struct.pack(">H", scheme.scheme)
    if scheme.scheme == Alg.ECDAA:
        return struct.pack(">HHH", scheme.scheme, scheme.hash_alg, scheme.count)
    return struct.pack(">HH", scheme.scheme, scheme.hash_alg)


def parse_ak(data: bytes, *, where: str = "AK public key") -> TpmPublic:
    """An AK given as TPM2B_PUBLIC, TPMT_PUBLIC (detected) or a PEM/DER SubjectPublicKeyInfo.

    A PEM/DER key yields a stand-in TpmPublic with ``from_spki=True`` (see ``public_from_key``).
    """
    data = bytes(data)
    stripped = data.lstrip()
    try:
        if stripped.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(stripped)
        elif data[:1] == b"\x30":  # DER SEQUENCE; a TPM2B/TPMT of a key never starts with 0x30
            key = serialization.load_der_public_key(data)
        else:
            return parse_public(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise MalformedEvidence(f"not a PEM/DER public key: {exc}", where=where) from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise MalformedEvidence("only RSA and ECC keys can be TPM keys", where=where)
    return public_from_key(key, from_spki=True)
