"""EFI signature databases (PK, KEK, db, dbx, MokList…) and EFI_SIGNATURE_DATA, parsed strictly.

A poisoned database is attack 14 in MISSION.md: every size in an EFI_SIGNATURE_LIST is checked
against the header, the list and the signature type before anything is sliced, a zero size can never
make the parser loop, and an X.509 entry must be one well-formed DER certificate filling its slot.
"""

from __future__ import annotations

import hashlib
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from .._reader import Reader
from ..errors import MalformedEvidence
from .guid import EFI_CERT_X509, Guid

_LIST_HEADER = 28  # SignatureType (16) + ListSize, HeaderSize, SignatureSize (u32 each)
_SIZES = struct.Struct("<III")  # SignatureListSize, SignatureHeaderSize, SignatureSize
_OWNER = 16
MAX_SIGNATURE_LISTS = 4096

# Size of SignatureData (after the owner GUID) for each fixed-size signature type.
_FIXED_SIZES: dict[str, tuple[str, int]] = {
    "c1c41626-504c-4092-aca9-41f936934328": ("sha256", 32),
    "826ca512-cf10-4ac9-b187-be01496631bd": ("sha1", 20),
    "0b6e5233-a65c-44c9-9407-d9ab83bfc8bd": ("sha224", 28),
    "ff3e5307-9fd0-48c9-85f1-8ad56c701e01": ("sha384", 48),
    "093e0fae-a6c4-4f50-9f1b-d41e2b89c19a": ("sha512", 64),
    "3c5766e8-269c-4e34-aa14-ed776e85b3b6": ("rsa2048", 256),
    "e2b36190-879b-4a3d-ad8d-f2e7bba32784": ("rsa2048_sha256", 32),
    "67f8444f-8743-48f1-a328-1eaab8736080": ("rsa2048_sha1", 20),
    "3bd2a492-96c0-4079-b420-fcf98ef103ed": ("x509_sha256", 32 + 16),
    "7076876e-80c2-4ee6-aad2-28b349a6865b": ("x509_sha384", 48 + 16),
    "446dbf63-2502-4cda-bcfa-2465d2b0fe9d": ("x509_sha512", 64 + 16),
}
# The same, by the GUID's 16 wire bytes: what a list header holds.
_FIXED_SIZES_RAW: dict[bytes, tuple[str, int]] = {
    Guid.parse(text).raw: value for text, value in _FIXED_SIZES.items()
}
_X509_RAW = EFI_CERT_X509.raw
_HASH_KIND_BY_SIZE = {20: "sha1", 32: "sha256", 48: "sha384", 64: "sha512"}


def der_length(data: bytes, where: str = "X.509 certificate") -> int:
    """Total length of the DER SEQUENCE at the start of ``data`` (MalformedEvidence if none)."""
    if len(data) < 2 or data[0] != 0x30:
        raise MalformedEvidence("not a DER SEQUENCE", where=where, offset=0)
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        raise MalformedEvidence("bad DER length", where=where, offset=1)
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


@dataclass(frozen=True, slots=True)
class _Unparsed:
    """What the certificate walk below reads from a certificate cryptography refuses."""

    serial: int
    issuer_cn: str | None
    subject_cn: str | None

    @property
    def reason(self) -> str:
        return f"serial number {self.serial} is not positive (RFC 5280)"


@dataclass(frozen=True, slots=True)
class X509Certificate:
    """A DER certificate from a signature database. Parsed (and so validated) at construction;
    the text fields are computed on demand. Nothing about it is trusted: it is what the log says.

    Real firmware ships PK and db certificates whose serial number is zero or negative, which
    RFC 5280 forbids and cryptography refuses (today with a deprecation warning, taken here as
    the refusal it announces). Such a certificate is kept when the rest of its outer structure is
    sound: it is identified by the SHA-256 of its DER like every other entry (what the appraisal
    compares), and only its serial and common names are read, by ``_walk``. ``certificate`` is
    then None and ``unparsed`` says why."""

    der: bytes
    _cert: list[x509.Certificate] = field(default_factory=list, repr=False, compare=False)
    unparsed: _Unparsed | None = field(default=None, compare=False)

    @classmethod
    def from_der(cls, der: bytes, *, where: str = "X.509 certificate") -> X509Certificate:
        cert, unparsed = _load_certificate(der, where)
        return cls(der, [] if cert is None else [cert], unparsed)

    @property
    def certificate(self) -> x509.Certificate | None:
        return self._cert[0] if self._cert else None

    @property
    def subject(self) -> str:
        if self.unparsed is not None:
            return f"CN={self.unparsed.subject_cn}" if self.unparsed.subject_cn else ""
        return self._cert[0].subject.rfc4514_string()

    @property
    def issuer(self) -> str:
        if self.unparsed is not None:
            return f"CN={self.unparsed.issuer_cn}" if self.unparsed.issuer_cn else ""
        return self._cert[0].issuer.rfc4514_string()

    @property
    def serial(self) -> int:
        return self.unparsed.serial if self.unparsed is not None else self._cert[0].serial_number

    @property
    def sha256(self) -> bytes:
        """SHA-256 fingerprint of the DER encoding."""
        return hashlib.sha256(self.der).digest()

    @property
    def common_name(self) -> str:
        """The subject CN, or the whole subject when there is none."""
        if self.unparsed is not None:
            return self.unparsed.subject_cn or f"certificate {self.sha256.hex()[:16]}"
        try:
            names = self._cert[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        except ValueError:
            names = []
        if names:
            value = names[0].value
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
        return self.subject

    def to_json(self) -> dict[str, Any]:
        out = {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": f"{self.serial:x}",
            "sha256": self.sha256.hex(),
        }
        if self.unparsed is not None:
            out["unparsed"] = self.unparsed.reason
        return out


def _load_certificate(
    der: bytes, where: str
) -> tuple[x509.Certificate, None] | tuple[None, _Unparsed]:
    """Parse (and so validate) one DER certificate filling its slot; MalformedEvidence if it is not
    one, the walked fields instead of a certificate when only its serial is not positive."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        return _load_strictly(der, where)


def _load_strictly(
    der: bytes, where: str
) -> tuple[x509.Certificate, None] | tuple[None, _Unparsed]:
    """:func:`_load_certificate` for a caller that has made CryptographyDeprecationWarning an error
    (cryptography's word for a serial number that is not positive)."""
    if der_length(der, where) != len(der):
        raise MalformedEvidence(
            f"DER length {der_length(der, where)} does not fill the {len(der)}-byte slot",
            where=where,
        )
    try:
        cert = x509.load_der_x509_certificate(der)
        # cryptography parses lazily: touch every field we show now, so a bad name or version is
        # a MalformedEvidence here and never a ValueError in describe(). Building the Name objects
        # is where a bad name fails; formatting them (rfc4514_string, the CN lookup) reads what was
        # built and cannot fail, so it is left to whoever shows them. Building them costs most of
        # a certificate's check, so names of the plain shape below, which always build, are not.
        _ = (cert.version, cert.serial_number)
        if not _plain_names(der):
            _ = (cert.subject, cert.issuer)
    except Exception as exc:
        # cryptography raises ValueError, InvalidVersion and, for some malformed names,
        # TypeError (found by scripts/fuzz): at this boundary every one means "malformed",
        # except a serial number that is not positive on an otherwise sound certificate.
        walked = _walk(der)
        if walked is None or walked.serial > 0:
            raise MalformedEvidence(f"not a valid certificate ({exc})", where=where) from None
        return None, walked
    return cert, None


# -- the certificate walk: only for certificates cryptography refuses ------------------------------

_CN_OID = bytes.fromhex("550403")  # 2.5.4.3
_STRING_CODECS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be"}


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``; ValueError if it
    overruns ``end`` or is not definite-length DER."""
    if pos + 2 > end:
        raise ValueError("truncated")
    tag, first = data[pos], data[pos + 1]
    if first < 0x80:
        start, length = pos + 2, first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + 2 + count > end:
            raise ValueError("bad length")
        start, length = pos + 2 + count, int.from_bytes(data[pos + 2 : pos + 2 + count], "big")
    if start + length > end:
        raise ValueError("overrun")
    return tag, start, start + length


# Attribute value tags whose names cryptography builds whenever the value is UTF-8 (it refuses
# invalid UTF-8 in each; a PrintableString's alphabet is checked at load already).
_PLAIN_TAGS = frozenset((0x0C, 0x13, 0x14, 0x16))  # UTF8String, PrintableString, T61, IA5String


def _plain_names(der: bytes) -> bool:
    """Whether issuer and subject of a certificate cryptography loaded have the plain shape: each
    RDN a SET of exactly one {OID, value} with short lengths, each value a string of a
    ``_PLAIN_TAGS`` type holding UTF-8. Building such a name cannot fail (the structure was
    checked at load; an RDN of one attribute can be neither empty nor a duplicate), so it need
    not be built to be validated. False for any other shape: the caller builds the names then,
    and cryptography decides.

    The walk to the names trusts the lengths of the elements before them, which the load checked;
    a slip (only possible on bytes cryptography did not load) lands on bytes that are not the
    plain shape, an IndexError or a ValueError, each of which is False."""
    d = der
    try:
        n = d[1]
        p = 2 + (n & 0x7F if n >= 0x80 else 0)  # tbsCertificate
        n = d[p + 1]
        p += 2 + (n & 0x7F if n >= 0x80 else 0)  # its first field
        if d[p] == 0xA0:  # version
            p = _after(d, p)
        p = _after(d, _after(d, p))  # serialNumber, signature: p is the issuer
        q = _after(d, p)
        n = d[p + 1]
        if not _plain_name(d, p + 2 + (n & 0x7F if n >= 0x80 else 0), q):
            return False
        p = _after(d, q)  # after validity: the subject
        n = d[p + 1]
        return _plain_name(d, p + 2 + (n & 0x7F if n >= 0x80 else 0), _after(d, p))
    except (ValueError, IndexError):
        return False


def _after(d: bytes, pos: int) -> int:
    """The end of the DER element at ``pos`` (its lengths trusted: see :func:`_plain_names`)."""
    n = d[pos + 1]
    if n < 0x80:
        return pos + 2 + n
    count = n & 0x7F
    return pos + 2 + count + int.from_bytes(d[pos + 2 : pos + 2 + count], "big")


def _plain_name(d: bytes, pos: int, end: int) -> bool:
    # An all-ASCII name needs no UTF-8 check of its values (its OIDs are mostly ASCII too).
    ascii_only = d[pos:end].isascii()
    while pos < end:
        # SET {SEQUENCE {OID, value}}, the SEQUENCE filling the SET, all three lengths short.
        tag, size, seq, seq_size, oid, oid_size = d[pos : pos + 6]
        stop = pos + 2 + size
        if tag != 0x31 or size >= 0x80 or seq != 0x30 or seq_size != size - 2:
            return False
        if oid != 0x06 or oid_size >= 0x80:
            return False
        at = pos + 6 + oid_size  # the value, after the OID, must end the SEQUENCE
        if d[at] not in _PLAIN_TAGS or at + 2 + d[at + 1] != stop:
            return False
        if not ascii_only:
            try:
                d[at + 2 : stop].decode("utf-8")
            except UnicodeDecodeError:
                return False
        pos = stop
    return pos == end


def _common_name(data: bytes, start: int, end: int) -> str | None:
    """The first CN in a Name (SEQUENCE OF SET OF AttributeTypeAndValue)."""
    pos = start
    while pos < end:
        tag, s, e = _tlv(data, pos, end)
        if tag != 0x31:
            raise ValueError("RDN is not a SET")
        inner = s
        while inner < e:
            tag, a, b = _tlv(data, inner, e)
            if tag != 0x30:
                raise ValueError("attribute is not a SEQUENCE")
            otag, os_, oe = _tlv(data, a, b)
            vtag, vs, ve = _tlv(data, oe, b)
            if otag == 0x06 and data[os_:oe] == _CN_OID and vtag in _STRING_CODECS:
                return data[vs:ve].decode(_STRING_CODECS[vtag], "replace")
            inner = b
        pos = e
    return None


def _walk(der: bytes) -> _Unparsed | None:
    """Certificate ::= SEQUENCE {tbsCertificate, signatureAlgorithm, signatureValue BIT STRING},
    tbsCertificate ::= SEQUENCE {[0] version OPTIONAL, serialNumber INTEGER, signature, issuer,
    validity, subject, …}: serial and CNs, or None when the structure is not that."""
    try:
        tag, s, e = _tlv(der, 0, len(der))
        if tag != 0x30 or e != len(der):
            return None
        tag, ts, te = _tlv(der, s, e)  # tbsCertificate
        tag2, _, ae = _tlv(der, te, e)  # signatureAlgorithm
        tag3, _, be = _tlv(der, ae, e)  # signatureValue
        if (tag, tag2, tag3) != (0x30, 0x30, 0x03) or be != e:
            return None
        tag, s, f = _tlv(der, ts, te)
        if tag == 0xA0:  # version
            tag, s, f = _tlv(der, f, te)
        if tag != 0x02 or f == s:
            return None
        serial = int.from_bytes(der[s:f], "big", signed=True)
        fields = []
        pos = f
        for _ in range(4):  # signature, issuer, validity, subject
            tag, s, pos = _tlv(der, pos, te)
            if tag != 0x30:
                return None
            fields.append((s, pos))
        issuer_cn = _common_name(der, *fields[1])
        subject_cn = _common_name(der, *fields[3])
    except ValueError:
        return None
    return _Unparsed(serial, issuer_cn, subject_cn)


@dataclass(frozen=True, slots=True)
class SignatureEntry:
    """One EFI_SIGNATURE_DATA: owner GUID, and a certificate or a hash (``kind`` says which)."""

    owner: Guid | None
    kind: str  # "x509", "sha256", "sha1", …, or "unknown"
    data: bytes
    certificate: X509Certificate | None = None

    def describe(self) -> str:
        if self.certificate is not None:
            return self.certificate.common_name
        return f"{self.kind}:{self.data.hex()}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"owner": str(self.owner) if self.owner else None, "kind": self.kind}
        if self.certificate is not None:
            out["certificate"] = self.certificate.to_json()
        else:
            out["data"] = self.data.hex()
        return out


@dataclass(frozen=True, slots=True)
class SignatureList:
    """One EFI_SIGNATURE_LIST."""

    signature_type: Guid
    header: bytes
    entries: tuple[SignatureEntry, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": str(self.signature_type),
            "type_name": self.signature_type.name,
            "header": self.header.hex(),
            "entries": [e.to_json() for e in self.entries],
        }


def parse_signature_lists(
    data: bytes, *, where: str = "signature database"
) -> tuple[SignatureList, ...]:
    """Parse a concatenation of EFI_SIGNATURE_LISTs (the content of PK, KEK, db, dbx, MokList).

    Checks, per list: 1. SignatureListSize >= 28 + SignatureHeaderSize and within the data;
    2. SignatureSize >= 16 (an owner GUID) and, for a fixed-size type, exactly 16 + that size;
    3. the space after the header is a whole number of signatures; 4. each X.509 entry is one DER
    certificate that fills its slot. An empty database (zero bytes) is an empty tuple.
    """
    lists: list[SignatureList] = []
    for layout in _layouts(data, where):
        entries = []
        sig_size = layout.sig_size
        for i, at in enumerate(range(layout.body, layout.end, sig_size)):
            content = data[at + _OWNER : at + sig_size]
            cert = None
            if layout.kind == "x509":
                cert = X509Certificate.from_der(content, where=f"{layout.here}, entry {i}")
            entries.append(SignatureEntry(Guid(data[at : at + _OWNER]), layout.kind, content, cert))
        header = data[layout.start + _LIST_HEADER : layout.body]
        lists.append(SignatureList(Guid(layout.sig_type), header, tuple(entries)))
    return tuple(lists)


class _Layout(NamedTuple):
    """Where one checked EFI_SIGNATURE_LIST's parts are: entries of ``sig_size`` bytes from
    ``body`` to ``end`` (a whole number of them). A NamedTuple: a dbx has a dozen lists."""

    here: str
    start: int
    sig_type: bytes
    kind: str
    sig_size: int
    body: int
    end: int


def _layouts(data: bytes, where: str) -> Iterator[_Layout]:
    """Checks 1–3 of :func:`parse_signature_lists` on each list in turn (lazily: a caller's check
    of one list's entries comes before the next list's header, as in one pass)."""
    pos = 0
    end = len(data)
    count = 0
    while pos < end:
        if count >= MAX_SIGNATURE_LISTS:
            raise MalformedEvidence(
                f"more than {MAX_SIGNATURE_LISTS} signature lists", where=where, offset=pos
            )
        layout = _layout(data, pos, where)
        count += 1
        yield layout
        pos = layout.end


def _layout(data: bytes, start: int, where: str) -> _Layout:
    here = f"{where}, signature list at offset {start}"
    if len(data) - start >= _LIST_HEADER:
        sig_type = data[start : start + 16]
        list_size, header_size, sig_size = _SIZES.unpack_from(data, start + 16)
    else:  # the Reader names the field that does not fit
        r = Reader(data, here, start=start)
        sig_type = r.take(16, "SignatureType")
        list_size = r.u32le("SignatureListSize")
        header_size = r.u32le("SignatureHeaderSize")
        sig_size = r.u32le("SignatureSize")
    # 1. The list's own size bounds everything in it.
    if list_size < _LIST_HEADER + header_size:
        raise MalformedEvidence(
            f"SignatureListSize {list_size} is smaller than the header (28 + {header_size})",
            where=here,
            offset=start,
        )
    if start + list_size > len(data):
        raise MalformedEvidence(
            f"SignatureListSize {list_size} overruns the data ({len(data) - start} bytes left)",
            where=here,
            offset=start,
        )
    # 2. Signature size: at least an owner GUID; exact for fixed-size types.
    if sig_size < _OWNER:
        raise MalformedEvidence(
            f"SignatureSize {sig_size} is smaller than the owner GUID (16)",
            where=here,
            offset=start + 24,
        )
    fixed = _FIXED_SIZES_RAW.get(sig_type)
    if fixed is not None and sig_size != _OWNER + fixed[1]:
        raise MalformedEvidence(
            f"SignatureSize {sig_size} is wrong for {fixed[0]} (must be {_OWNER + fixed[1]})",
            where=here,
            offset=start + 24,
        )
    # 3. A whole number of signatures after the header.
    body = list_size - _LIST_HEADER - header_size
    if body % sig_size != 0:
        raise MalformedEvidence(
            f"list body of {body} bytes is not a multiple of SignatureSize {sig_size}",
            where=here,
            offset=start,
        )
    kind = "x509" if sig_type == _X509_RAW else (fixed[0] if fixed else "unknown")
    first = start + _LIST_HEADER + header_size
    return _Layout(here, start, sig_type, kind, sig_size, first, first + body)


def parse_signature_data(data: bytes, *, where: str = "EFI_SIGNATURE_DATA") -> SignatureEntry:
    """Parse the data of an EV_EFI_VARIABLE_AUTHORITY event: the db/MokList entry that verified
    an image. Usually EFI_SIGNATURE_DATA (owner GUID + certificate or hash); shim and some older
    firmware log the bare DER certificate, recognised when the data is exactly one DER SEQUENCE."""
    owner, kind, content = _signature_data_parts(data, where)
    cert = X509Certificate.from_der(content, where=where) if kind == "x509" else None
    return SignatureEntry(None if owner is None else Guid(owner), kind, content, cert)


def signature_data_id(data: bytes) -> tuple[str, bool] | None:
    """(id, whether it names a certificate) of an EFI_SIGNATURE_DATA, as :mod:`~assay.uefi.sigdb`
    names database entries, from its structure alone: a certificate is *not* validated here (None
    only when the structure is malformed). Whoever trusts the id of a certificate must know it
    valid, as :func:`parse_signature_data` would check, or know its bytes identical to a
    certificate that was."""
    try:
        _, kind, content = _signature_data_parts(data, "EFI_SIGNATURE_DATA")
    except MalformedEvidence:
        return None
    if kind == "x509":
        return hashlib.sha256(content).hexdigest(), True
    return content.hex(), False


def _signature_data_parts(data: bytes, where: str) -> tuple[bytes | None, str, bytes]:
    """(owner GUID bytes or None for a bare certificate, kind, content) of an EFI_SIGNATURE_DATA."""
    if len(data) >= 4 and data[0] == 0x30 and data[1] in (0x81, 0x82, 0x83):
        try:
            exact = der_length(data, where) == len(data)
        except MalformedEvidence:
            exact = False
        if exact:
            return None, "x509", data
    if len(data) < _OWNER + 1:
        raise MalformedEvidence(
            f"{len(data)} bytes is too short for an owner GUID and data", where=where, offset=0
        )
    content = data[_OWNER:]
    if content[0] == 0x30:
        return data[:_OWNER], "x509", content
    return data[:_OWNER], _HASH_KIND_BY_SIZE.get(len(content), "unknown"), content
