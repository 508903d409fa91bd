"""IMA file signatures (the ``sig`` field): the signature_v2_hdr layout and its verification.

The ``sig`` field carries a file's ``security.ima`` xattr verbatim when it is a signature
(``EVM_IMA_XATTR_DIGSIG``, type 3), else an EVM portable signature (type 5) or nothing
(``ima_template_lib.c``: ``ima_eventsig_init``, ``ima_eventevmsig_init``). Both use
``struct signature_v2_hdr`` (``security/integrity/integrity.h``): type u8, version u8, hash_algo u8
(the kernel's enum hash_algo), keyid big-endian u32, sig_size big-endian u16, then sig_size bytes.

Version 2 signs the file digest itself (``digsig_asymmetric.c``: the digest is the data a
PKCS#1 v1.5 or ECDSA signature covers, with hdr.hash_algo as its hash). Version 3 signs the hash
of ``struct ima_file_id``'s used part instead — u8 xattr type, u8 hash algorithm (the kernel's
index), the file digest — computed with the file digest's algorithm (``calc_file_id_hash``), so a
signature cannot be replayed as one over another kind of digest. The kernel verifies v3 for type 3
since Linux 7.1 ("ima: add regular file data hash signature version 3 support"); type 6
(fs-verity, ``IMA_VERITY_DIGSIG``) comes with the ``d-ngv2`` field this parser does not read. The
header is never signed: a v3 signature relabelled v2 (or the reverse) is checked against the data
its label says, and fails.

The key id is the low 32 bits of the key's X.509 Subject Key Identifier, or when there is none of
SHA-1 over the public key (PKCS#1 RSAPublicKey DER, or the uncompressed EC point), as evmctl and
the kernel's asymmetric key ids compute it.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ..errors import MalformedEvidence
from ._formats import KERNEL_HASH_ALGOS, KERNEL_HASH_INDEX

EVM_IMA_XATTR_DIGSIG = 3
EVM_XATTR_PORTABLE_DIGSIG = 5
_HDR = struct.Struct(">BBBIH")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_CRYPTO_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha1": hashes.SHA1(),  # noqa: S303 - old IMA signatures are SHA-1; the policy decides
    "sha224": hashes.SHA224(),
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
    "sha3-256": hashes.SHA3_256(),
    "sha3-384": hashes.SHA3_384(),
    "sha3-512": hashes.SHA3_512(),
}


@dataclass(frozen=True, slots=True)
class ImaSignature:
    """A parsed signature_v2_hdr and its payload. ``hash_algo`` is the kernel's name for
    hdr.hash_algo (``"sha256"``), or ``"hash_algo#N"`` for an index the kernel does not define."""

    xattr_type: int
    version: int
    hash_algo: str
    keyid: int
    signature: bytes


def parse_signature(value: bytes, *, where: str, offset: int) -> ImaSignature:
    """Parse a non-empty ``sig`` field strictly: a known type, version 2 or 3, and a sig_size
    that accounts for exactly the rest of the field. ``offset`` is the field's offset in the log."""
    if len(value) < _HDR.size:
        raise MalformedEvidence(
            f"sig field: {len(value)} bytes is shorter than a signature header ({_HDR.size})",
            where=where,
            offset=offset,
        )
    xtype, version, algo, keyid, size = _HDR.unpack_from(value)
    if xtype not in (EVM_IMA_XATTR_DIGSIG, EVM_XATTR_PORTABLE_DIGSIG):
        raise MalformedEvidence(
            f"sig field: xattr type {xtype} is not a signature (3 or 5)", where=where, offset=offset
        )
    if version not in (2, 3):
        raise MalformedEvidence(
            f"sig field: signature format version {version} (expected 2 or 3)",
            where=where,
            offset=offset + 1,
        )
    if size != len(value) - _HDR.size:
        raise MalformedEvidence(
            f"sig field: header says {size} signature bytes, the field holds "
            f"{len(value) - _HDR.size}",
            where=where,
            offset=offset + 7,
        )
    name = KERNEL_HASH_ALGOS[algo][0] if algo < len(KERNEL_HASH_ALGOS) else f"hash_algo#{algo}"
    return ImaSignature(xtype, version, name, keyid, value[_HDR.size :])


@dataclass(frozen=True, slots=True)
class ImaKey:
    """A public key trusted to sign files, with its IMA key id and the label the policy gave it.

    ``issuer``/``serial``/``skid`` identify the certificate it came from (None for a bare public
    key): an appended (modsig) PKCS#7 signature names its signer that way, never by the key id.
    """

    label: str
    keyid: int
    key: PublicKey
    issuer: bytes | None = None
    serial: int | None = None
    skid: bytes | None = None

    @property
    def keyid_hex(self) -> str:
        return f"{self.keyid:08x}"

    @property
    def key_type(self) -> Literal["rsa", "ecdsa"]:
        return "rsa" if isinstance(self.key, rsa.RSAPublicKey) else "ecdsa"


def keyid_of(key: PublicKey, cert: x509.Certificate | None = None) -> int:
    """The IMA v2 key id: the certificate's SKID's low 32 bits, else SHA-1 of the public key's
    PKCS#1 (RSA) or uncompressed-point (EC) encoding, low 32 bits."""
    if cert is not None:
        try:
            skid = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            skid = None
        if skid is not None and len(skid.digest) >= 4:
            return int.from_bytes(skid.digest[-4:], "big")
    if isinstance(key, rsa.RSAPublicKey):
        raw = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    else:
        raw = key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    return int.from_bytes(hashlib.sha1(raw).digest()[-4:], "big")  # noqa: S324 - the key id is defined so


CERTIFICATE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
)
"""What ``cryptography`` raises for a malformed certificate: not all of it is a ValueError (some
malformed names raise TypeError, as ``assay.uefi.signatures`` found by fuzzing)."""


def parse_certificate(data: bytes, *, pem: bool = False) -> x509.Certificate:
    """An X.509 certificate from DER (or PEM), with its extensions readable; ValueError names what
    is wrong whatever ``cryptography`` raised (a key load's buffer is the node's bytes)."""
    try:
        cert = x509.load_pem_x509_certificate(data) if pem else x509.load_der_x509_certificate(data)
        # Names and extensions are parsed lazily: make them fail here, not in a message.
        cert.subject.rfc4514_string()
        cert.issuer.rfc4514_string()
        cert.extensions  # noqa: B018
    except CERTIFICATE_ERRORS as exc:
        raise ValueError(f"not an X.509 certificate: {exc}") from None
    return cert


def load_key(pem: bytes, label: str, keyid: int | None = None) -> ImaKey:
    """A key from PEM text (a public key or an X.509 certificate). ValueError names what is wrong:
    the caller (the policy loader) turns it into a configuration error."""
    if b"BEGIN CERTIFICATE" in pem:
        return key_of_certificate(parse_certificate(pem, pem=True), label, keyid)
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a PEM public key or certificate: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError(f"unsupported key type {type(key).__name__} (RSA or EC only)")
    return ImaKey(label, keyid_of(key) if keyid is None else keyid, key)


def key_of_certificate(cert: x509.Certificate, label: str, keyid: int | None = None) -> ImaKey:
    """The key of a parsed X.509 certificate, with the identities a signature may name it by.
    ValueError for a key type IMA signatures do not use, or a malformed certificate."""
    try:
        key = cert.public_key()
        skid: bytes | None = cert.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    except x509.ExtensionNotFound:
        skid = None
    except CERTIFICATE_ERRORS as exc:
        raise ValueError(f"certificate: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError(f"unsupported key type {type(key).__name__} (RSA or EC only)")
    if keyid is None:
        keyid = int.from_bytes(skid[-4:], "big") if skid and len(skid) >= 4 else keyid_of(key)
    return ImaKey(label, keyid, key, cert.issuer.public_bytes(), cert.serial_number, skid)


SigOutcome = Literal["valid", "invalid", "unknown_key", "unsupported"]


def file_id_hash(xattr_type: int, digest_alg: str, digest: bytes) -> bytes | None:
    """What a v3 signature signs: the hash, in ``digest_alg``, of the used part of
    ``struct ima_file_id`` (xattr type, the algorithm's kernel index, the digest). None for an
    algorithm this verifier cannot hash with."""
    algorithm = _CRYPTO_HASHES.get(digest_alg)
    index = KERNEL_HASH_INDEX.get(digest_alg)
    if algorithm is None or index is None:
        return None
    h = hashes.Hash(algorithm)
    h.update(bytes((xattr_type, index)) + digest)
    return h.finalize()


def verify_signature(
    sig: ImaSignature, digest_alg: str, digest: bytes, keys: tuple[ImaKey, ...]
) -> tuple[SigOutcome, str]:
    """Check a v2 or v3 signature over a file digest with the keys given (the caller's trust
    decision).

    Returns the outcome and a one-line reason. ``digest_alg``/``digest`` come from the entry's
    d-ng field, which the template hash covers; the header's algorithm must be the same one.
    Steps: 1. type 3 (an EVM portable signature covers xattrs the log does not carry);
    2. the header's algorithm is the file digest's; 3. the signed data: the digest (v2) or the
    ima_file_id hash (v3); 4. a trusted key with the header's key id verifies it.
    """
    # 1. Type.
    if sig.xattr_type != EVM_IMA_XATTR_DIGSIG:
        return (
            "unsupported",
            f"signature type {sig.xattr_type} version {sig.version} is not verified "
            f"(an EVM signature covers file metadata the IMA list does not carry)",
        )
    # 2. Algorithm.
    if sig.hash_algo != digest_alg:
        return "invalid", f"signature is over a {sig.hash_algo} digest, the file's is {digest_alg}"
    algorithm = _CRYPTO_HASHES.get(digest_alg)
    if algorithm is None:
        return "unsupported", f"no verifier for {digest_alg} signatures"
    # 3. Signed data.
    if sig.version == 2:
        signed: bytes | None = digest
    else:
        signed = file_id_hash(sig.xattr_type, digest_alg, digest)
    if sig.version not in (2, 3) or signed is None:
        return "unsupported", f"signature version {sig.version} over {digest_alg} is not verified"
    # 4. Key.
    matching = [k for k in keys if k.keyid == sig.keyid]
    if not matching:
        return "unknown_key", f"signed by key id {sig.keyid:08x}, which the policy does not trust"
    for k in matching:
        if verify_prehashed(k.key, sig.signature, signed, algorithm):
            return "valid", f"v{sig.version} signature by {k.label} (key id {k.keyid_hex})"
    return "invalid", f"v{sig.version} signature by key id {sig.keyid:08x} does not verify"


def verify_prehashed(
    key: PublicKey, signature: bytes, digest: bytes, algorithm: hashes.HashAlgorithm
) -> bool:
    """PKCS#1 v1.5 (RSA) or ECDSA (EC, DER-encoded r and s) over a digest already computed."""
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, padding.PKCS1v15(), Prehashed(algorithm))
        else:
            key.verify(signature, digest, ec.ECDSA(Prehashed(algorithm)))
    except (InvalidSignature, ValueError):
        return False
    return True


def crypto_hash(name: str) -> hashes.HashAlgorithm | None:
    """The ``cryptography`` hash for a kernel algorithm name, None for one not verified."""
    return _CRYPTO_HASHES.get(name)
