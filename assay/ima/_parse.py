"""Parse an IMA measurement list (binary or ASCII) into typed, immutable, *unverified* entries.

Formats (``security/integrity/ima/ima_fs.c``, ``ima_measurements_show`` and
``ima_ascii_measurements_show``): per entry, binary: u32 PCR, the template hash (20 bytes in
``binary_runtime_measurements``; the bank's size in the per-bank ``binary_runtime_measurements_<alg>``
files of kernels ≥ 6.10), u32 template-name length, the name, then — except for the ``ima``
template — u32 template-data length and the template data: each field as u32 length + bytes. The
``ima`` template writes its 20-byte digest without a length and its name as u32 length + the name
without a NUL. ASCII: ``"%2d "`` PCR, hex template hash, the template name, then each field after
one space (``d-ng`` as ``alg:hex``, names as text, ``sig``/``buf``/``modsig`` as hex; an empty field
is an empty string). Integers are little-endian (x86, arm64, and any kernel with
``ima_canonical_fmt``).

What is trusted: nothing yet. But every field an entry exposes is covered by its template hash:
the parser recomputes the hash over the template data (what ``ima_calc_field_array_hash`` hashes)
and refuses an entry whose data does not hash to it, so a later replay against a quote vouches for
every field. A violation (all-zero template hash, ``ima_add_violation``) covers nothing; its
``violation`` flag says so.

Caps: the input size, the entry count, each template's data, and each name are bounded before
anything is sliced; every length is checked against what remains; no recursion. Every failure is a
MalformedEvidence naming the entry index and the absolute byte offset.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Literal, NamedTuple

from ..algorithms import HashAlg
from ..errors import MalformedEvidence
from ._formats import (
    DIGEST_SIZES,
    IMA_DIGEST_SIZE,
    IMA_EVENT_NAME_LEN_MAX,
    MAX_TEMPLATE_NAME,
    template_fields,
)
from ._sig import ImaSignature, parse_signature

MAX_IMA_LOG_SIZE = 256 * 1024 * 1024
MAX_ENTRIES = 4 * 1024 * 1024
MAX_TEMPLATE_DATA = 1024 * 1024
MAX_NAME = 4096  # PATH_MAX, the d_path buffer a file name comes from
MAX_PCR = 23

_U32 = struct.Struct("<I")
_ZERO20 = bytes(IMA_DIGEST_SIZE)
_HEX = re.compile(rb"(?:[0-9a-f][0-9a-f])*")
_BY_SIZE = {20: HashAlg.SHA1, 32: HashAlg.SHA256, 48: HashAlg.SHA384, 64: HashAlg.SHA512}
Format = Literal["binary", "ascii"]


class ModSig(NamedTuple):
    """An ``ima-modsig`` entry's appended signature: the digest it signs (``d-modsig``) and the raw
    PKCS#7 blob (``modsig``), parsed and verified only where a policy needs it
    (:func:`assay.ima.verify_modsig`): a blob the strict reader refuses then fails that check,
    not the whole list."""

    digest_alg: str
    digest: bytes
    signature: bytes


class ImaEntry(NamedTuple):
    """One measurement. ``offset`` is where it starts in the whole log, ``size`` how many bytes it
    takes there; ``template_data`` is exactly
    what the kernel hashed into ``template_hash`` (for the ``ima`` template: the digest and the name
    zero-padded to 256 bytes). ``digest_alg`` is the kernel's name for the file-digest algorithm
    (``"sha256"``); ``name`` the raw name bytes (any bytes but NUL; spaces arrive as ``_``).
    ``sig``/``buf``/``modsig`` are None when the template has no such field. A NamedTuple: a log
    holds up to millions of these and a tuple is the cheapest immutable record."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, as assay.eventlog.Event's does
    offset: int
    size: int
    pcr: int
    template_hash: bytes
    template: str
    template_data: bytes
    violation: bool
    digest_alg: str
    digest: bytes
    name: bytes
    sig: ImaSignature | None
    buf: bytes | None
    modsig: ModSig | None

    @property
    def display_name(self) -> str:
        """The name for messages and tables: printable text, everything else escaped."""
        return escape_name(self.name)


def escape_name(name: bytes) -> str:
    """Any bytes as one line of safe text: UTF-8 printable characters kept, the rest (control
    characters, invalid UTF-8, backslash) as ``\\xNN`` / ``\\uNNNN`` escapes."""
    text = name.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class ImaLog:
    """Parsed, unverified entries of a measurement list or of a chunk of one.

    ``start_index``/``start_offset`` are where the chunk begins in the whole log (0 for a full log);
    ``end_offset`` where the next entry would begin. ``template_hash_alg`` is the algorithm of the
    logged template hashes (SHA-1 except in the per-bank files).
    """

    format: Format
    template_hash_alg: HashAlg
    entries: tuple[ImaEntry, ...]
    start_index: int
    start_offset: int
    end_offset: int


def _fail(index: int, offset: int, message: str) -> MalformedEvidence:
    return MalformedEvidence(message, where=f"IMA entry {index}", offset=offset)


def parse_ima_log(
    data: bytes,
    *,
    start_index: int = 0,
    start_offset: int = 0,
    template_hash_alg: HashAlg | None = None,
    max_size: int = MAX_IMA_LOG_SIZE,
) -> ImaLog:
    """Parse a measurement list, binary or ASCII (detected from the first byte: an ASCII list
    starts with the PCR number in decimal, a binary one with a little-endian u32 PCR ≤ 23).

    For a chunk of a longer log (entries the agent added since the last verified offset), pass
    where it starts and the template-hash algorithm of the log it continues; otherwise the
    algorithm is taken from the template-hash size (20: SHA-1, 32: SHA-256, 48: SHA-384, 64:
    SHA-512 — an SM3 per-bank file needs ``template_hash_alg=HashAlg.SM3_256``).
    """
    if len(data) > max_size:
        raise MalformedEvidence(f"IMA log is larger than {max_size} bytes", offset=start_offset)
    if not data:
        alg = template_hash_alg or HashAlg.SHA1
        return ImaLog("binary", alg, (), start_index, start_offset, start_offset)
    if data[0] in b"0123456789 ":
        alg = template_hash_alg or _ascii_alg(data, start_index, start_offset)
        entries = _parse_ascii(data, alg, start_index, start_offset)
        fmt: Format = "ascii"
    else:
        alg = template_hash_alg or _binary_alg(data)
        entries = _parse_binary(data, alg, start_index, start_offset)
        fmt = "binary"
    return ImaLog(fmt, alg, tuple(entries), start_index, start_offset, start_offset + len(data))


def _binary_alg(data: bytes) -> HashAlg:
    """The template-hash size whose header layout reads a known template name in the first entry;
    SHA-1 (the standard file) when none does, so the parser names what is wrong and where."""
    for size, alg in _BY_SIZE.items():
        at = 4 + size
        if len(data) < at + 4:
            continue
        nlen = _U32.unpack_from(data, at)[0]
        if 0 < nlen <= MAX_TEMPLATE_NAME and at + 4 + nlen <= len(data):
            name = data[at + 4 : at + 4 + nlen]
            if name.isascii() and template_fields(name.decode()) is not None:
                return alg
    return HashAlg.SHA1


def _ascii_alg(data: bytes, index: int, base: int) -> HashAlg:
    line = data[: data.find(b"\n")] if b"\n" in data else data
    parts = line.lstrip(b" ").split(b" ", 2)
    if len(parts) >= 2 and len(parts[1]) // 2 in _BY_SIZE and len(parts[1]) % 2 == 0:
        return _BY_SIZE[len(parts[1]) // 2]
    raise _fail(index, base, "not an IMA measurement list: the first line has no template hash")


class _Template:
    """A template's fields, resolved once per distinct template name in a log."""

    __slots__ = ("fields", "is_ima", "name", "raw")

    def __init__(self, raw: bytes, name: str, fields: tuple[str, ...]):
        self.raw = raw
        self.name = name
        self.fields = fields
        self.is_ima = name == "ima"


def _template(raw: bytes, cache: dict[bytes, _Template], index: int, offset: int) -> _Template:
    t = cache.get(raw)
    if t is not None:
        return t
    name = raw.decode("ascii", "replace") if raw.isascii() else None
    fields = template_fields(name) if name is not None else None
    if name is None or fields is None:
        raise _fail(index, offset, f"unknown template {escape_name(raw)!r}")
    t = cache[raw] = _Template(raw, name, fields)
    return t


def _parse_binary(data: bytes, alg: HashAlg, start_index: int, base: int) -> list[ImaEntry]:
    hsize = alg.digest_size
    head = struct.Struct(f"<I{hsize}sI")
    zero = bytes(hsize)
    hasher = alg.hasher
    unpack_head, u32 = head.unpack_from, _U32.unpack_from
    n, pos, index = len(data), 0, start_index
    out: list[ImaEntry] = []
    cache: dict[bytes, _Template] = {}
    t: _Template | None = None  # the previous entry's: usually this one's too
    while pos < n:
        if index - start_index >= MAX_ENTRIES:
            raise _fail(index, base + pos, f"more than {MAX_ENTRIES} entries")
        if n - pos < head.size:
            raise _fail(index, base + pos, f"truncated entry header: {n - pos} bytes left")
        pcr, th, nlen = unpack_head(data, pos)
        if pcr > MAX_PCR:
            raise _fail(index, base + pos, f"PCR {pcr} is out of range 0–{MAX_PCR}")
        p = pos + head.size
        if not 0 < nlen <= MAX_TEMPLATE_NAME or p + nlen > n:
            raise _fail(
                index, base + p - 4, f"template name length {nlen} is invalid or runs past the end"
            )
        if t is None or nlen != len(t.raw) or not data.startswith(t.raw, p):
            t = _template(data[p : p + nlen], cache, index, base + p)
        p += nlen
        violation = th == zero
        values: list[tuple[bytes, int]] = []
        if t.is_ima:
            end, tdata, values = _ima_template_binary(data, p, index, base)
        else:
            if n - p < 4:
                raise _fail(index, base + p, "truncated before the template data length")
            dlen = u32(data, p)[0]
            p += 4
            if dlen > MAX_TEMPLATE_DATA or p + dlen > n:
                raise _fail(
                    index,
                    base + p - 4,
                    f"template data length {dlen} is over the cap or runs past the end",
                )
            end = p + dlen
            tdata = data[p:end]
        if not violation and hasher(tdata).digest() != th:
            raise _fail(
                index,
                base + pos + 4,
                f"template hash {th.hex()} does not match the template data ({alg.bank})",
            )
        fast = None if t.is_ima or t.fields != _NG else _fast_ng(data, p, end)
        if fast is not None:
            row = (index, base + pos, end - pos, pcr, th, t.name, tdata, violation, *fast)
            out.append(_tuple_new(ImaEntry, row))
        else:
            if not t.is_ima:
                values = _split_fields(data, p, end, t, index, base)
            out.append(_entry(t, values, index, base + pos, end - pos, pcr, th, tdata, violation))
        pos = end
        index += 1
    return out


_NG = ("d-ng", "n-ng")
_tuple_new = tuple.__new__


def _prefixes() -> dict[int, tuple[tuple[bytes, str, int], ...]]:
    """d-ng field length -> the ``<alg>:\\0`` prefixes (with the algorithm and prefix length) of
    the algorithms whose full digest makes a field that long: the fast path for ima-ng entries."""
    by_len: dict[int, list[tuple[bytes, str, int]]] = {}
    for name, size in DIGEST_SIZES.items():
        by_len.setdefault(len(name) + 2 + size, []).append(
            (name + b":\0", name.decode(), len(name) + 2)
        )
    return {n: tuple(v) for n, v in by_len.items()}


_PREFIX = _prefixes()


def _fast_ng(data: bytes, p: int, end: int) -> tuple[str, bytes, bytes, None, None, None] | None:
    """An ima-ng entry's digest and name without the general field walk, when both are the usual
    shape (a known prefix and full-size digest, one NUL-terminated name filling the rest); None
    sends anything else through :func:`_split_fields`, which names what is wrong and where."""
    if end - p < 8:
        return None
    l1 = _U32.unpack_from(data, p)[0]
    q = p + 4
    r = q + l1
    if r + 4 > end:
        return None
    for pre in _PREFIX.get(l1, ()):
        if data.startswith(pre[0], q):
            break
    else:
        return None
    s = r + 4
    l2 = _U32.unpack_from(data, r)[0]
    if s + l2 != end or not 0 < l2 <= MAX_NAME or data[end - 1] != 0:
        return None
    if data.find(b"\0", s, end - 1) >= 0:
        return None
    return pre[1], data[q + pre[2] : r], data[s : end - 1], None, None, None


def _split_fields(
    data: bytes, p: int, end: int, t: _Template, index: int, base: int
) -> list[tuple[bytes, int]]:
    """The fields of a template's data, each with its absolute offset; exactly filling it."""
    values = []
    u32 = _U32.unpack_from
    for field in t.fields:
        if end - p < 4:
            raise _fail(index, base + p, f"template data ends before field {field!r}")
        flen = u32(data, p)[0]
        p += 4
        if flen > end - p:
            raise _fail(
                index,
                base + p - 4,
                f"field {field!r} length {flen} runs past the template data ({end - p} left)",
            )
        values.append((data[p : p + flen], base + p))
        p += flen
    if p != end:
        raise _fail(index, base + p, f"{end - p} bytes after the last field of {t.name}")
    return values


def _ima_template_binary(
    data: bytes, p: int, index: int, base: int
) -> tuple[int, bytes, list[tuple[bytes, int]]]:
    """The ``ima`` template: a 20-byte digest with no length, then u32 length + name (no NUL).
    The kernel hashes the digest and the name zero-padded to IMA_EVENT_NAME_LEN_MAX + 1."""
    if len(data) - p < IMA_DIGEST_SIZE + 4:
        raise _fail(index, base + p, "truncated 'ima' template data")
    digest = data[p : p + IMA_DIGEST_SIZE]
    p += IMA_DIGEST_SIZE
    nlen = _U32.unpack_from(data, p)[0]
    if nlen > IMA_EVENT_NAME_LEN_MAX or p + 4 + nlen > len(data):
        raise _fail(
            index, base + p, f"'ima' template name length {nlen} is over 255 or runs past the end"
        )
    name = data[p + 4 : p + 4 + nlen]
    end = p + 4 + nlen
    tdata = digest + name + bytes(IMA_EVENT_NAME_LEN_MAX + 1 - nlen)
    return end, tdata, [(digest, base + p - IMA_DIGEST_SIZE), (name, base + p + 4)]


class _Fields:
    """Decoded field values of one entry, before they become an ImaEntry."""

    __slots__ = ("buf", "digest", "digest_alg", "mdigest", "modsig", "name", "sig")

    def __init__(self) -> None:
        self.digest_alg = ""
        self.digest = b""
        self.name = b""
        self.sig: ImaSignature | None = None
        self.buf: bytes | None = None
        self.mdigest: tuple[str, bytes] | None = None
        self.modsig: bytes | None = None


def _entry(
    t: _Template,
    values: list[tuple[bytes, int]],
    index: int,
    offset: int,
    size: int,
    pcr: int,
    th: bytes,
    tdata: bytes,
    violation: bool,
) -> ImaEntry:
    f = _Fields()
    where = f"IMA entry {index}"
    for field, (value, at) in zip(t.fields, values, strict=True):
        _decode_field(field, value, at, violation, t.is_ima, f, where)
    modsig = None
    if f.mdigest is not None or f.modsig is not None:
        if not (f.mdigest and f.modsig):
            raise _fail(index, offset, "d-modsig and modsig must be both present or both empty")
        modsig = ModSig(f.mdigest[0], f.mdigest[1], f.modsig)
    return ImaEntry(
        index,
        offset,
        size,
        pcr,
        th,
        t.name,
        tdata,
        violation,
        f.digest_alg,
        f.digest,
        f.name,
        f.sig,
        f.buf,
        modsig,
    )


def _decode_field(
    field: str, value: bytes, at: int, violation: bool, ima: bool, f: _Fields, where: str
) -> None:
    """Decode one field strictly into ``f`` (``at``: the field's offset, for errors)."""
    if field == "d-ng":
        f.digest_alg, f.digest = _digest_ng(value, at, violation, where)
    elif field == "n-ng" or (field == "n" and not ima):
        f.name = _nul_terminated(value, at, where, MAX_NAME if field == "n-ng" else 256)
    elif field == "d":
        if len(value) not in (16, IMA_DIGEST_SIZE) or (ima and len(value) != IMA_DIGEST_SIZE):
            raise MalformedEvidence(f"'d' field of {len(value)} bytes", where=where, offset=at)
        f.digest_alg, f.digest = ("sha1" if len(value) == IMA_DIGEST_SIZE else "md5"), value
    elif field == "n":  # the 'ima' template's name: no NUL, at most 255 bytes (checked on read)
        if b"\0" in value:
            raise MalformedEvidence("'n' field holds a NUL byte", where=where, offset=at)
        f.name = value
    elif field == "sig":
        f.sig = parse_signature(value, where=where, offset=at) if value else None
    elif field == "buf":
        f.buf = value
    elif field == "d-modsig":
        f.mdigest = _digest_ng(value, at, violation, where) if value else None
    elif field == "modsig":
        f.modsig = value or None


def _digest_ng(value: bytes, at: int, violation: bool, where: str) -> tuple[str, bytes]:
    """``<alg>:\\0<digest>``; a violation's digest is IMA_DIGEST_SIZE zero bytes whatever the
    algorithm (``ima_eventdigest_init_common`` with no digest)."""
    colon = value.find(b":")
    if colon <= 0 or value[colon + 1 : colon + 2] != b"\0":
        raise MalformedEvidence("d-ng field is not '<alg>:\\0<digest>'", where=where, offset=at)
    name, digest = value[:colon], value[colon + 2 :]
    size = DIGEST_SIZES.get(name)
    if size is None:
        raise MalformedEvidence(
            f"d-ng field: unknown hash algorithm {escape_name(name)!r}", where=where, offset=at
        )
    if len(digest) != size and not (violation and digest == _ZERO20):
        raise MalformedEvidence(
            f"d-ng field: {len(digest)}-byte {name.decode()} digest (expected {size})",
            where=where,
            offset=at + colon + 2,
        )
    return name.decode(), digest


def _nul_terminated(value: bytes, at: int, where: str, cap: int) -> bytes:
    if not value or value[-1] != 0 or value.find(b"\0") != len(value) - 1:
        raise MalformedEvidence(
            "name field is not one NUL-terminated string", where=where, offset=at
        )
    if len(value) > cap:
        raise MalformedEvidence(
            f"name of {len(value) - 1} bytes is over the cap ({cap - 1})", where=where, offset=at
        )
    return value[:-1]


# --- ASCII -----------------------------------------------------------------------------------------


def _parse_ascii(data: bytes, alg: HashAlg, start_index: int, base: int) -> list[ImaEntry]:
    """Each line rebuilt into the template data the kernel hashed, which must reproduce the line's
    template hash: the ASCII form is a rendering (a name holding a newline cannot be told apart),
    so a line that does not reproduce its hash is refused rather than guessed at."""
    hsize = alg.digest_size
    zero = bytes(hsize)
    hasher = alg.hasher
    out: list[ImaEntry] = []
    cache: dict[bytes, _Template] = {}
    pos, index, n = 0, start_index, len(data)
    while pos < n:
        if index - start_index >= MAX_ENTRIES:
            raise _fail(index, base + pos, f"more than {MAX_ENTRIES} entries")
        nl = data.find(b"\n", pos, pos + MAX_TEMPLATE_DATA * 2 + 1024)
        if nl < 0:
            raise _fail(index, base + pos, "line without a newline (truncated, or over the cap)")
        line = data[pos:nl]
        pcr, th, t, tokens = _ascii_head(line, hsize, cache, index, base + pos)
        violation = th == zero
        tdata, values = _ascii_template_data(t, tokens, index, base + pos)
        if not violation and hasher(tdata).digest() != th:
            raise _fail(
                index,
                base + pos,
                f"template hash {th.hex()} does not match the fields "
                f"({alg.bank}): a lossy ASCII rendering, or altered",
            )
        out.append(_entry(t, values, index, base + pos, nl + 1 - pos, pcr, th, tdata, violation))
        pos = nl + 1
        index += 1
    return out


def _ascii_head(
    line: bytes, hsize: int, cache: dict[bytes, _Template], index: int, at: int
) -> tuple[int, bytes, _Template, list[bytes]]:
    body = line[1:] if line[:1] == b" " else line  # "%2d ": one leading space below PCR 10
    parts = body.split(b" ")
    if len(parts) < 3 or not parts[0].isdigit() or len(parts[0]) > 2:
        raise _fail(index, at, "line is not '<pcr> <template hash> <template> <fields…>'")
    pcr = int(parts[0])
    if pcr > MAX_PCR or (pcr < 10) != (body is not line):
        raise _fail(index, at, f"PCR field {escape_name(line[:3])!r} is not the kernel's '%2d'")
    th = parts[1]
    if len(th) != 2 * hsize or not _HEX.fullmatch(th):
        raise _fail(index, at, f"template hash is not {2 * hsize} lowercase hex digits")
    t = _template(parts[2], cache, index, at)
    tokens = parts[3:]
    if len(tokens) != len(t.fields):
        raise _fail(index, at, f"{t.name} has {len(t.fields)} fields, the line has {len(tokens)}")
    return pcr, bytes.fromhex(th.decode()), t, tokens


def _unhex(token: bytes, index: int, at: int, what: str) -> bytes:
    if not _HEX.fullmatch(token):
        raise _fail(index, at, f"{what} is not lowercase hex")
    return bytes.fromhex(token.decode())


def _ascii_template_data(
    t: _Template, tokens: list[bytes], index: int, at: int
) -> tuple[bytes, list[tuple[bytes, int]]]:
    """The binary field values behind the ASCII tokens, and the template data they hash to."""
    values: list[bytes] = []
    for field, token in zip(t.fields, tokens, strict=True):
        if field in ("d-ng", "d-modsig"):
            if not token:
                values.append(b"")
                continue
            alg, sep, hexd = token.partition(b":")
            if not sep:
                raise _fail(index, at, f"{field} field is not '<alg>:<hex>'")
            values.append(alg + b":\0" + _unhex(hexd, index, at, field))
        elif field == "d":
            values.append(_unhex(token, index, at, "'d' field"))
        elif field in ("n", "n-ng"):
            values.append(token if t.is_ima else token + b"\0")
        else:  # sig, buf, modsig
            values.append(_unhex(token, index, at, f"{field} field"))
    if t.is_ima:
        name = values[1]
        if len(values[0]) != IMA_DIGEST_SIZE or len(name) > IMA_EVENT_NAME_LEN_MAX:
            raise _fail(index, at, "'ima' template needs a 20-byte digest and a name ≤ 255 bytes")
        tdata = values[0] + name + bytes(IMA_EVENT_NAME_LEN_MAX + 1 - len(name))
    else:
        tdata = b"".join(_U32.pack(len(v)) + v for v in values)
        if len(tdata) > MAX_TEMPLATE_DATA:
            raise _fail(index, at, f"template data over the cap ({MAX_TEMPLATE_DATA} bytes)")
    return tdata, [(v, at) for v in values]
