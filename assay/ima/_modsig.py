"""Appended (modsig) signatures: the PKCS#7 SignedData a kernel module carries, from ``ima-modsig``.

The ``modsig`` field is the raw PKCS#7 message of the file's appended signature
(``ima_modsig.c``: the bytes before ``struct module_signature`` and the ``~Module signature
appended~`` marker) and ``d-modsig`` the digest of the file without it, in the signer's digest
algorithm: exactly what the signature covers when the SignerInfo has no signed attributes, which
is how ``scripts/sign-file`` signs (CMS, ``CMS_NOATTR``, detached). So the signature is checked
over the logged digest, never over file content the verifier does not have.

``cryptography`` has no PKCS#7 verification (it signs, encrypts and loads certificates), and a
verification API would want the content, not its digest. So this is a strict, minimal DER reader
of the one shape the kernel's modules use: ContentInfo(signedData) → SignedData v1/v3 with a
detached ``data`` content, any embedded certificates and CRLs skipped (a signer's key comes from
the policy, never from the evidence), exactly one SignerInfo naming its signer by issuer and
serial or by subject key identifier, RSA PKCS#1 v1.5 or ECDSA. DER only (definite, minimal
lengths), no recursion, every length checked against what remains. Signed attributes (which the
kernel accepts, and ``openssl cms`` adds by default) are reported, and the verifier refuses them:
what they are checked against is more code than any module signer needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import MalformedEvidence
from ._parse import ModSig
from ._sig import ImaKey, SigOutcome, crypto_hash, verify_prehashed

MAX_MODSIG = 64 * 1024


def _oid(dotted: str) -> bytes:
    """The DER content octets of an OBJECT IDENTIFIER."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


SIGNED_DATA = _oid("1.2.840.113549.1.7.2")
DATA = _oid("1.2.840.113549.1.7.1")
DIGESTS: dict[bytes, str] = {
    _oid("1.3.14.3.2.26"): "sha1",
    _oid("2.16.840.1.101.3.4.2.4"): "sha224",
    _oid("2.16.840.1.101.3.4.2.1"): "sha256",
    _oid("2.16.840.1.101.3.4.2.2"): "sha384",
    _oid("2.16.840.1.101.3.4.2.3"): "sha512",
    _oid("2.16.840.1.101.3.4.2.8"): "sha3-256",
    _oid("2.16.840.1.101.3.4.2.9"): "sha3-384",
    _oid("2.16.840.1.101.3.4.2.10"): "sha3-512",
}
# Signature algorithm OID -> (key type, the hash it fixes, or None: the digest algorithm's).
SIGNATURES: dict[bytes, tuple[Literal["rsa", "ecdsa"], str | None]] = {
    _oid("1.2.840.113549.1.1.1"): ("rsa", None),
    _oid("1.2.840.113549.1.1.5"): ("rsa", "sha1"),
    _oid("1.2.840.113549.1.1.14"): ("rsa", "sha224"),
    _oid("1.2.840.113549.1.1.11"): ("rsa", "sha256"),
    _oid("1.2.840.113549.1.1.12"): ("rsa", "sha384"),
    _oid("1.2.840.113549.1.1.13"): ("rsa", "sha512"),
    _oid("1.2.840.10045.2.1"): ("ecdsa", None),
    _oid("1.2.840.10045.4.1"): ("ecdsa", "sha1"),
    _oid("1.2.840.10045.4.3.1"): ("ecdsa", "sha224"),
    _oid("1.2.840.10045.4.3.2"): ("ecdsa", "sha256"),
    _oid("1.2.840.10045.4.3.3"): ("ecdsa", "sha384"),
    _oid("1.2.840.10045.4.3.4"): ("ecdsa", "sha512"),
}

_SEQ, _SET, _INT, _OID, _OCTETS, _NULL = 0x30, 0x31, 0x02, 0x06, 0x04, 0x05
_CTX0, _CTX1, _CTX0_PRIM = 0xA0, 0xA1, 0x80


@dataclass(frozen=True, slots=True)
class ModuleSignature:
    """A parsed, unverified appended signature: who claims to have signed (issuer DER and serial,
    or a subject key identifier), with which algorithms, and the signature bytes."""

    digest_alg: str
    key_type: Literal["rsa", "ecdsa"]
    issuer: bytes | None
    serial: int | None
    skid: bytes | None
    signature: bytes
    signed_attrs: bool

    @property
    def signer(self) -> str:
        if self.skid is not None:
            return f"subject key id {self.skid.hex()}"
        return f"serial {self.serial:x} of its issuer"


class _Der:
    """A cursor over one DER value's content: ``take`` reads the next TLV, checking its tag."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def fail(self, message: str) -> MalformedEvidence:
        return MalformedEvidence(f"modsig PKCS#7: {message}", offset=self.pos)

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < self.end else None

    def take(self, tag: int, what: str) -> _Der:
        """The next value, which must have ``tag``; the cursor moves past it."""
        if self.pos + 2 > self.end:
            raise self.fail(f"ends before {what}")
        got = self.data[self.pos]
        if got != tag:
            raise self.fail(f"{what}: expected tag 0x{tag:02x}, got 0x{got:02x}")
        first = self.data[self.pos + 1]
        p = self.pos + 2
        if first < 0x80:
            length = first
        else:
            n = first & 0x7F
            if n == 0 or n > 3 or p + n > self.end:
                raise self.fail(f"{what}: length form 0x{first:02x} (DER, at most 3 length bytes)")
            length = int.from_bytes(self.data[p : p + n], "big")
            if length < 0x80 or length < 1 << (8 * (n - 1)):
                raise self.fail(f"{what}: length {length} is not minimally encoded")
            p += n
        if length > self.end - p:
            raise self.fail(f"{what}: length {length} runs past its container")
        self.pos = p + length
        return _Der(self.data, p, p + length)

    def raw(self, tag: int, what: str) -> bytes:
        """The next value's whole encoding (tag, length and content)."""
        start = self.pos
        self.take(tag, what)
        return self.data[start : self.pos]

    def content(self) -> bytes:
        return self.data[self.pos : self.end]

    def done(self, what: str) -> None:
        if self.pos != self.end:
            raise self.fail(f"{self.end - self.pos} bytes after the last field of {what}")


def _algorithm(der: _Der, what: str) -> bytes:
    """An AlgorithmIdentifier's OID; its parameters must be absent or NULL."""
    alg = der.take(_SEQ, what)
    oid = alg.take(_OID, what).content()
    if alg.peek() == _NULL and alg.take(_NULL, f"{what} parameters").content():
        raise alg.fail(f"{what}: NULL parameters with content")
    alg.done(what)
    return oid


def parse_module_signature(raw: bytes) -> ModuleSignature:
    """Parse the ``modsig`` field strictly (see the module docstring); MalformedEvidence names
    what is wrong and its offset in the field."""
    if len(raw) > MAX_MODSIG:
        raise MalformedEvidence(f"modsig PKCS#7 of {len(raw)} bytes is over {MAX_MODSIG}")
    top = _Der(raw, 0, len(raw))
    info = top.take(_SEQ, "ContentInfo")
    top.done("the PKCS#7 message")
    if info.take(_OID, "contentType").content() != SIGNED_DATA:
        raise info.fail("contentType is not signedData")
    wrapper = info.take(_CTX0, "content")
    info.done("ContentInfo")
    sd = wrapper.take(_SEQ, "SignedData")
    wrapper.done("content")
    version = int.from_bytes(sd.take(_INT, "SignedData version").content(), "big", signed=True)
    if version not in (1, 3):
        raise sd.fail(f"SignedData version {version} (expected 1 or 3)")
    algs = sd.take(_SET, "digestAlgorithms")
    listed = set()
    while algs.peek() is not None:
        listed.add(_algorithm(algs, "digestAlgorithm"))
    encap = sd.take(_SEQ, "encapContentInfo")
    if encap.take(_OID, "eContentType").content() != DATA:
        raise encap.fail("eContentType is not data")
    if encap.peek() is not None:
        raise encap.fail("the content is embedded (a module signature is detached)")
    for tag, what in ((_CTX0, "certificates"), (_CTX1, "crls")):
        if sd.peek() == tag:
            sd.take(tag, what)  # never trusted: keys come from the policy
    signers = sd.take(_SET, "signerInfos")
    sd.done("SignedData")
    signer = signers.take(_SEQ, "SignerInfo")
    if signers.peek() is not None:
        raise signers.fail("more than one SignerInfo (a module has one signer)")
    return _signer_info(signer, listed)


def _signer_info(si: _Der, listed: set[bytes]) -> ModuleSignature:
    version = int.from_bytes(si.take(_INT, "SignerInfo version").content(), "big", signed=True)
    issuer = serial = skid = None
    if version == 1:
        ias = si.take(_SEQ, "issuerAndSerialNumber")
        issuer = ias.raw(_SEQ, "issuer")
        serial = int.from_bytes(ias.take(_INT, "serialNumber").content(), "big", signed=True)
        ias.done("issuerAndSerialNumber")
    elif version == 3:
        skid = si.take(_CTX0_PRIM, "subjectKeyIdentifier").content()
    else:
        raise si.fail(f"SignerInfo version {version} (expected 1 or 3)")
    digest_oid = _algorithm(si, "digestAlgorithm")
    digest_alg = DIGESTS.get(digest_oid)
    if digest_alg is None:
        raise si.fail(f"digest algorithm OID {digest_oid.hex()} is not supported")
    if digest_oid not in listed:
        raise si.fail("the signer's digest algorithm is not in digestAlgorithms")
    signed_attrs = si.peek() == _CTX0
    if signed_attrs:
        si.take(_CTX0, "signedAttrs")
    sig_oid = _algorithm(si, "signatureAlgorithm")
    scheme = SIGNATURES.get(sig_oid)
    if scheme is None:
        raise si.fail(f"signature algorithm OID {sig_oid.hex()} is not supported")
    if scheme[1] is not None and scheme[1] != digest_alg:
        raise si.fail(f"signature algorithm hashes with {scheme[1]}, the digest is {digest_alg}")
    signature = si.take(_OCTETS, "signature").content()
    if si.peek() == _CTX1:
        si.take(_CTX1, "unsignedAttrs")  # not covered by the signature: ignored
    si.done("SignerInfo")
    return ModuleSignature(digest_alg, scheme[0], issuer, serial, skid, signature, signed_attrs)


def _signers(sig: ModuleSignature, keys: tuple[ImaKey, ...]) -> list[ImaKey]:
    if sig.skid is not None:
        return [k for k in keys if k.skid is not None and k.skid == sig.skid]
    return [k for k in keys if k.issuer == sig.issuer and k.serial == sig.serial]


def verify_modsig(modsig: ModSig, keys: tuple[ImaKey, ...]) -> tuple[SigOutcome, str]:
    """Check an ``ima-modsig`` entry's appended signature over its ``d-modsig`` digest.

    Steps: 1. parse the PKCS#7 strictly; 2. no signed attributes; 3. the signer's digest
    algorithm is the logged one; 4. a policy key whose certificate the SignerInfo names (issuer
    and serial, or subject key id) verifies the signature over the digest.
    """
    # 1. Parse.
    try:
        sig = parse_module_signature(modsig.signature)
    except MalformedEvidence as exc:
        return "invalid", f"appended signature unreadable: {exc}"
    # 2. Signed attributes.
    if sig.signed_attrs:
        return (
            "unsupported",
            "appended signature has signed attributes (Assay verifies the scripts/sign-file "
            "form, without them)",
        )
    # 3. Algorithm.
    algorithm = crypto_hash(sig.digest_alg)
    if sig.digest_alg != modsig.digest_alg or algorithm is None:
        return (
            "invalid",
            f"appended signature is over a {sig.digest_alg} digest, d-modsig is "
            f"{modsig.digest_alg}",
        )
    # 4. Key.
    candidates = [k for k in _signers(sig, keys) if (k.key_type == sig.key_type)]
    if not candidates:
        return (
            "unknown_key",
            f"appended signature by the certificate with {sig.signer}, which the policy does "
            f"not trust (a modsig signer must be given as a certificate)",
        )
    for k in candidates:
        if verify_prehashed(k.key, sig.signature, modsig.digest, algorithm):
            return "valid", f"appended signature by {k.label} ({sig.signer})"
    return "invalid", f"appended signature by the certificate with {sig.signer} does not verify"
