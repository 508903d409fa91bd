"""TPMS_ATTEST / TPM2B_ATTEST, TPML_PCR_SELECTION and TPMT_SIGNATURE, parsed from untrusted bytes.

Parsing checks only structure (sizes, known algorithms, no trailing bytes); it does not check the
magic, the type or the signature: ``quote.verify_quote`` does, and reports each with its own code.
These parsers run on every quote, so they use ``struct.unpack_from`` at computed offsets with an
explicit bounds check before each read, and cache the (few, fleet-wide identical) PCR selections.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..algorithms import HashAlg
from ..errors import MalformedEvidence
from .constants import TPM_GENERATED_VALUE, Alg, AttestType

MAX_ATTEST_SIZE = 2048
"""TPM2B_ATTEST cap: a quote of 16 banks of 256 PCRs with SHA-512 names stays well below."""
MAX_SIGNATURE_SIZE = 1024
MAX_BANKS = 16
MAX_SIZE_OF_SELECT = 32
MAX_NAME = 66  # sizeof(TPMU_NAME): u16 alg + 64-byte digest
MAX_DATA = 66  # sizeof(TPMT_HA)

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HH = struct.Struct(">HH")
_HHH = struct.Struct(">HHH")
_HEADER = struct.Struct(">IHH")  # magic, type, qualifiedSigner.size
_CLOCK = struct.Struct(">QIIBQ")  # clock, resetCount, restartCount, safe, firmwareVersion
_CLOCK_SIZE = _CLOCK.size
_HASH_BY_ID = {int(a): a for a in HashAlg}
_QUOTE = int(AttestType.QUOTE)
_MAGIC = _U32.pack(TPM_GENERATED_VALUE)
_BITS = tuple(tuple(b for b in range(8) if v >> b & 1) for v in range(256))


@dataclass(frozen=True, slots=True)
class PcrSelection:
    """TPML_PCR_SELECTION: per bank, in the TPM's order, the selected PCR indices ascending."""

    banks: tuple[tuple[HashAlg, tuple[int, ...]], ...]
    raw: bytes = field(default=b"", compare=False, repr=False)

    def pairs(self) -> frozenset[tuple[HashAlg, int]]:
        return frozenset((bank, pcr) for bank, pcrs in self.banks for pcr in pcrs)

    def to_json(self) -> dict[str, list[int]]:
        return {bank.bank: list(pcrs) for bank, pcrs in self.banks}


@dataclass(frozen=True, slots=True)
class ClockInfo:
    """TPMS_CLOCK_INFO. Counters are obfuscated unless the key is in the endorsement/platform
    hierarchy (Part 1 §36.7), but stay constant per boot, which is what reboot detection needs."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True, slots=True)
class QuoteInfo:
    """TPMS_QUOTE_INFO: the selection and the digest of the selected PCRs."""

    selection: PcrSelection
    pcr_digest: bytes


@dataclass(frozen=True, slots=True)
class Attest:
    """A parsed TPMS_ATTEST (unverified). ``quote`` is set only for type ATTEST_QUOTE."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    attested: bytes
    """The raw TPMU_ATTEST bytes (for every type)."""
    quote: QuoteInfo | None
    raw: bytes
    """The TPMS_ATTEST bytes: exactly what the TPM signed."""


@dataclass(frozen=True, slots=True)
class Signature:
    """A parsed TPMT_SIGNATURE: RSA signature (or HMAC digest) in ``sig``, ECC in ``r``/``s``."""

    scheme: Alg
    hash_alg: HashAlg | None
    sig: bytes = b""
    r: bytes = b""
    s: bytes = b""


def _fail(where: str, offset: int, message: str) -> MalformedEvidence:
    return MalformedEvidence(message, where=where, offset=offset)


def _hash(value: int, where: str, offset: int) -> HashAlg:
    alg = _HASH_BY_ID.get(value)
    if alg is None:
        raise _fail(where, offset, f"unsupported hash algorithm 0x{value:04x}")
    return alg


def parse_attest(data: bytes) -> Attest:
    """Parse a TPM2B_ATTEST or a bare TPMS_ATTEST, detected as follows.

    A TPMS_ATTEST starts with the magic TPM_GENERATED; a TPM2B_ATTEST starts with a u16 equal to
    the length of the rest. Anything else is parsed as TPMS_ATTEST (and fails the magic check).
    """
    raw, magic, kind, extra_at, clock_at, selection, digest_at = scan_attest(data)
    clock, reset, restart, safe, firmware = _CLOCK.unpack_from(raw, clock_at)
    quote_at = clock_at + _CLOCK_SIZE
    quote = None if selection is None else QuoteInfo(selection, raw[digest_at:])
    return Attest(
        magic,
        kind,
        raw[8 : extra_at - 2],
        raw[extra_at:clock_at],
        ClockInfo(clock, reset, restart, safe == 1),
        firmware,
        raw[quote_at:],
        quote,
        raw,
    )


AttestScan = tuple[bytes, int, int, int, int, "PcrSelection | None", int]
"""(TPMS_ATTEST bytes, magic, type, extraData offset, clockInfo offset, quote selection or None,
pcrDigest offset): what ``scan_attest`` found, offsets into the TPMS_ATTEST bytes."""


def scan_attest(data: bytes) -> AttestScan:
    """Check the structure of a TPM2B/TPMS_ATTEST and locate its fields without building objects.

    The fast path of ``parse_attest`` that ``verify_quote`` uses directly (it runs per quote).
    """
    data = bytes(data)
    n = len(data)
    if data[:4] == _MAGIC and n <= MAX_ATTEST_SIZE:  # a TPMS_ATTEST, as the TPM signed it
        return _scan_tpms(data, "TPMS_ATTEST", 0)
    if n > MAX_ATTEST_SIZE + 2:
        raise _fail("TPM2B_ATTEST", 0, f"{n} bytes, larger than {MAX_ATTEST_SIZE}")
    if n >= 6 and data[:4] != _MAGIC and _U16.unpack_from(data)[0] == n - 2:
        return _scan_tpms(data[2:], "TPM2B_ATTEST", 2)
    if n > MAX_ATTEST_SIZE:
        raise _fail("TPMS_ATTEST", 0, f"{n} bytes, larger than {MAX_ATTEST_SIZE}")
    return _scan_tpms(data, "TPMS_ATTEST", 0)


def _scan_tpms(data: bytes, where: str, base: int) -> AttestScan:
    """Scan a TPMS_ATTEST filling ``data``; ``base`` shifts error offsets to the caller's input."""
    end = len(data)
    if end < 10:
        raise _fail(where, base, f"header needs 10 bytes, {end} left")
    magic, kind, size = _HEADER.unpack_from(data)
    pos = 8 + size
    if size > MAX_NAME or pos + 2 > end:
        raise _fail(where, base + 6, f"qualifiedSigner size {size} exceeds the input or {MAX_NAME}")
    size = _U16.unpack_from(data, pos)[0]
    extra_at = pos + 2
    clock_at = extra_at + size
    if size > MAX_DATA or clock_at + _CLOCK_SIZE > end:
        raise _fail(where, base + pos, f"extraData size {size} exceeds the input or {MAX_DATA}")
    if data[clock_at + 16] > 1:
        raise _fail(
            where, base + clock_at + 16, f"clockInfo.safe is {data[clock_at + 16]}, not 0/1"
        )
    pos = clock_at + _CLOCK_SIZE
    if kind != _QUOTE:
        return data, magic, kind, extra_at, clock_at, None, end
    # A fleet quotes a few selections, almost always of one bank: guess that length and look the
    # bytes up among the selections already decoded. The encoding is self-delimiting, so bytes equal
    # to a decoded selection are that selection, wherever they came from; otherwise parse.
    guess = pos + 7 + data[pos + 6] if pos + 7 <= end else end
    selection = _SELECTIONS.get(data[pos:guess])
    if selection is None:
        sel_end = _selection_end(data, pos, where, base)
        selection = _decode_selection(data[pos:sel_end], where, base + pos)
    else:
        sel_end = pos + len(selection.raw)
    digest_at = sel_end + 2
    if digest_at > end:
        raise _fail(where, base + sel_end, "pcrDigest size missing")
    size = _U16.unpack_from(data, sel_end)[0]
    if digest_at + size != end or size > 64:
        raise _digest_size_error(size, sel_end, end, where, base)
    return data, magic, kind, extra_at, clock_at, selection, digest_at


def _digest_size_error(size: int, pos: int, end: int, where: str, base: int) -> MalformedEvidence:
    """Why the pcrDigest TPM2B at ``pos`` (``size`` bytes) does not end the input exactly."""
    if size > 64 or pos + 2 + size > end:
        return _fail(where, base + pos, f"pcrDigest size {size} exceeds the input or 64")
    return _fail(where, base + pos + 2 + size, f"{end - pos - 2 - size} trailing bytes")


def _selection_end(data: bytes, pos: int, where: str, base: int = 0) -> int:
    """The offset just after the TPML_PCR_SELECTION at ``pos`` (sizes checked, nothing decoded)."""
    end = len(data)
    if pos + 4 > end:
        raise _fail(where, base + pos, "TPML_PCR_SELECTION count missing")
    count = _U32.unpack_from(data, pos)[0]
    if count > MAX_BANKS:
        raise _fail(where, base + pos, f"TPML_PCR_SELECTION count {count} exceeds {MAX_BANKS}")
    pos += 4
    for _ in range(count):
        if pos + 3 > end:
            raise _fail(where, base + pos, "TPMS_PCR_SELECTION truncated")
        size = data[pos + 2]
        if size > MAX_SIZE_OF_SELECT:
            raise _fail(where, base + pos + 2, f"sizeofSelect {size} exceeds {MAX_SIZE_OF_SELECT}")
        pos += 3 + size
        if pos > end:
            raise _fail(where, base + pos - size, f"pcrSelect of {size} bytes truncated")
    return pos


_SELECTIONS: dict[bytes, PcrSelection] = {}
"""Decoded selections by their bytes: a fleet quotes a handful of selections, millions of times."""
_MAX_CACHED_SELECTIONS = 256


def _decode_selection(raw: bytes, where: str, base: int) -> PcrSelection:
    """Decode a TPML_PCR_SELECTION bounded by ``_selection_end``, and cache it."""
    banks: list[tuple[HashAlg, tuple[int, ...]]] = []
    seen: set[HashAlg] = set()
    pos = 4
    for _ in range(_U32.unpack_from(raw)[0]):
        alg_id, size = _U16.unpack_from(raw, pos)[0], raw[pos + 2]
        bank = _hash(alg_id, where, base + pos)
        if bank in seen:
            raise _fail(where, base + pos, f"bank {bank.bank} selected twice")
        seen.add(bank)
        bitmap = raw[pos + 3 : pos + 3 + size]
        banks.append((bank, tuple(i * 8 + b for i, v in enumerate(bitmap) for b in _BITS[v])))
        pos += 3 + size
    selection = PcrSelection(tuple(banks), raw)
    if len(_SELECTIONS) >= _MAX_CACHED_SELECTIONS:
        _SELECTIONS.clear()
    _SELECTIONS[raw] = selection
    return selection


def parse_pcr_selection(data: bytes, *, where: str = "TPML_PCR_SELECTION") -> PcrSelection:
    """Parse exactly one TPML_PCR_SELECTION."""
    data = bytes(data)
    end = _selection_end(data, 0, where)
    if end != len(data):
        raise _fail(where, end, f"{len(data) - end} trailing bytes")
    return _SELECTIONS.get(data) or _decode_selection(data, where, 0)


def parse_signature(data: bytes) -> Signature:
    """Parse exactly one TPMT_SIGNATURE (RSASSA, RSAPSS, ECDSA and the other ECC schemes, HMAC,
    NULL); an unknown sigAlg is malformed because its layout is unknown."""
    alg_id, hash_alg, sig, r, s = scan_signature(data)
    return Signature(Alg(alg_id), hash_alg, sig, r, s)


SignatureScan = tuple[int, "HashAlg | None", bytes, bytes, bytes]
"""(sigAlg, hashAlg, RSA signature or HMAC digest, ECC r, ECC s) as found by ``scan_signature``."""


def scan_signature(data: bytes) -> SignatureScan:
    """The fields of a TPMT_SIGNATURE as a tuple (``parse_signature``'s fast path)."""
    data = bytes(data)
    if len(data) >= 6:  # the usual case first: RSASSA/RSAPSS, a known hash, no trailing bytes
        alg_id, hash_id, size = _HHH.unpack_from(data)
        hash_alg = _HASH_BY_ID.get(hash_id)
        if alg_id in _RSA_SIGS and size == len(data) - 6 <= 512 and hash_alg is not None:
            return alg_id, hash_alg, data[6:], b"", b""
    return _scan_signature(data)


def _scan_signature(data: bytes) -> SignatureScan:
    """``scan_signature`` for every layout, and the reason for any malformed one."""
    end, where = len(data), "TPMT_SIGNATURE"
    if end > MAX_SIGNATURE_SIZE:
        raise _fail(where, 0, f"{end} bytes, larger than {MAX_SIGNATURE_SIZE}")
    if end == 2 and data == b"\x00\x10":
        return Alg.NULL, None, b"", b"", b""
    if end < 4:
        raise _fail(where, 0, f"needs at least 4 bytes, got {end}")
    alg_id, hash_id = _HH.unpack_from(data)
    hash_alg = _HASH_BY_ID.get(hash_id) or _hash(hash_id, where, 2)
    if alg_id in _RSA_SIGS:
        sig, pos = _tpm2b(data, 4, where, "signature", 512)
        _done(pos, end, where)
        return alg_id, hash_alg, sig, b"", b""
    if alg_id in _ECC_SIGS:
        r, pos = _tpm2b(data, 4, where, "signatureR", 66)
        s, pos = _tpm2b(data, pos, where, "signatureS", 66)
        _done(pos, end, where)
        return alg_id, hash_alg, b"", r, s
    if alg_id == Alg.HMAC:
        size = hash_alg.digest_size
        if 4 + size > end:
            raise _fail(where, 4, f"HMAC digest needs {size} bytes, {end - 4} left")
        _done(4 + size, end, where)
        return alg_id, hash_alg, data[4 : 4 + size], b"", b""
    raise _fail(where, 0, f"unsupported signature algorithm 0x{alg_id:04x}")


_RSA_SIGS = frozenset({int(Alg.RSASSA), int(Alg.RSAPSS)})
_ECC_SIGS = frozenset({int(Alg.ECDSA), int(Alg.ECDAA), int(Alg.SM2), int(Alg.ECSCHNORR)})


def _tpm2b(data: bytes, pos: int, where: str, what: str, cap: int) -> tuple[bytes, int]:
    if pos + 2 > len(data):
        raise _fail(where, pos, f"{what} size missing")
    size = _U16.unpack_from(data, pos)[0]
    if size > cap or pos + 2 + size > len(data):
        raise _fail(where, pos, f"{what} size {size} exceeds the input or {cap}")
    return data[pos + 2 : pos + 2 + size], pos + 2 + size


def _done(pos: int, end: int, where: str) -> None:
    if pos != end:
        raise _fail(where, pos, f"{end - pos} trailing bytes")


# -- marshalling (tests, benchmarks, and the agent's challenge selection) -------------------------


def marshal_pcr_selection(
    selection: PcrSelection | Mapping[HashAlg, Iterable[int]], *, size_of_select: int = 3
) -> bytes:
    """A TPML_PCR_SELECTION selecting these PCRs, banks in the given order."""
    banks = selection.banks if isinstance(selection, PcrSelection) else selection.items()
    out = [_U32.pack(len(banks))]
    for bank, pcrs in banks:
        bits = 0
        for pcr in pcrs:
            if not 0 <= pcr < size_of_select * 8:
                raise ValueError(f"PCR {pcr} does not fit a {size_of_select}-byte selection")
            bits |= 1 << pcr
        bitmap = bits.to_bytes(size_of_select, "little")
        out.append(struct.pack(">HB", bank, size_of_select) + bitmap)
    return b"".join(out)


def marshal_quote_attest(
    selection: PcrSelection | Mapping[HashAlg, Iterable[int]],
    pcr_digest: bytes,
    extra_data: bytes,
    *,
    clock_info: ClockInfo = ClockInfo(0, 0, 0, True),
    firmware_version: int = 0,
    qualified_signer: bytes = b"",
    magic: int = TPM_GENERATED_VALUE,
    attest_type: int = AttestType.QUOTE,
) -> bytes:
    """A TPMS_ATTEST of a quote (what a TPM signs), for tests and benchmarks."""
    c = clock_info
    return b"".join(
        (
            _HEADER.pack(magic, attest_type, len(qualified_signer)),
            qualified_signer,
            _U16.pack(len(extra_data)),
            extra_data,
            _CLOCK.pack(c.clock, c.reset_count, c.restart_count, int(c.safe), firmware_version),
            marshal_pcr_selection(selection),
            _U16.pack(len(pcr_digest)),
            pcr_digest,
        )
    )


def marshal_signature(sig: Signature) -> bytes:
    """The TPMT_SIGNATURE of a Signature."""
    if sig.scheme == Alg.NULL or sig.hash_alg is None:
        return _U16.pack(Alg.NULL)
    head = _HH.pack(sig.scheme, sig.hash_alg)
    if sig.scheme == Alg.HMAC:
        return head + sig.sig
    if sig.scheme in (Alg.RSASSA, Alg.RSAPSS):
        return head + _U16.pack(len(sig.sig)) + sig.sig
    return head + _U16.pack(len(sig.r)) + sig.r + _U16.pack(len(sig.s)) + sig.s
