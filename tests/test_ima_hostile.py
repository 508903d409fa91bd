"""Hostile IMA lists, one per attack or defect: each ends in MalformedEvidence naming the entry and
the byte offset of what is wrong (never another exception, never a partial log)."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

import pytest

from assay.errors import MalformedEvidence
from assay.ima import parse_ima_log
from assay.ima._parse import MAX_TEMPLATE_DATA

from . import imalogbuilder as b

GOOD = b.typical(2)
GOOD_BIN = b.binary(GOOD)
SECOND = len(b.binary(GOOD[:1]))  # where entry 1 starts
NG_HEAD = 4 + 20 + 4 + len(b"ima-ng")  # PCR, hash, name length, name: then the data length


def _entry(template: str, fields: list[bytes], *, th: bytes | None = None, pcr: int = 10) -> bytes:
    data = b"".join(b.u32(len(f)) + f for f in fields)
    name = template.encode()
    th = hashlib.sha1(data).digest() if th is None else th
    return b.u32(pcr) + th + b.u32(len(name)) + name + b.u32(len(data)) + data


def _raw(template: str, data: bytes) -> bytes:
    """An entry with arbitrary template data, its template hash made to match (so only the
    structure is wrong)."""
    name = template.encode()
    return (
        b.u32(10) + hashlib.sha1(data).digest() + b.u32(len(name)) + name + b.u32(len(data)) + data
    )


def _ng(name: bytes = b"/x") -> list[bytes]:
    return [b.d_ng("sha256", bytes(32)), b.n_ng(name)]


def _altered() -> bytes:
    data = bytearray(GOOD_BIN)
    data[-1] ^= 0x01  # the last entry's buf: no longer what its template hash covers
    return bytes(data)


CASES: list[tuple[str, Callable[[], bytes], int, int, str]] = [
    # (name, input, entry index, offset, message fragment)
    ("truncated_header", lambda: GOOD_BIN[: SECOND + 10], 1, SECOND, "truncated entry header"),
    ("truncated_template_data", lambda: GOOD_BIN[:-3], 4, len(b.binary(GOOD[:-1])) + 4 + 20 + 4 + len(b"ima-buf"), "runs past the end"),
    ("template_data_length_over_cap", lambda: b.u32(10) + bytes(20) + b.u32(6) + b"ima-ng" + b.u32(MAX_TEMPLATE_DATA + 1), 0, NG_HEAD, "over the cap"),
    ("template_name_length_zero", lambda: b.u32(10) + bytes(20) + b.u32(0), 0, 24, "template name length 0"),
    ("template_name_length_huge", lambda: b.u32(10) + bytes(20) + b.u32(0xFFFFFFFF) + b"ima-ng", 0, 24, "template name length"),
    ("unknown_template", lambda: _entry("ima-ng", _ng()) + _entry("evil-ng", _ng()), 1, len(_entry("ima-ng", _ng())) + 28, "unknown template 'evil-ng'"),
    ("pcr_out_of_range", lambda: _entry("ima-ng", _ng(), pcr=24), 0, 0, "PCR 24 is out of range"),
    ("field_length_past_data", lambda: _raw("ima-ng", b.u32(1000) + b"sha256:\0"), 0, NG_HEAD + 4, "field 'd-ng' length 1000"),
    ("trailing_bytes_after_fields", lambda: _raw("ima-ng", b"".join(b.u32(len(f)) + f for f in _ng()) + b"XX"), 0, NG_HEAD + 4 + 44 + 7, "2 bytes after the last field"),
    ("missing_field", lambda: _raw("ima-sig", b"".join(b.u32(len(f)) + f for f in _ng())), 0, 4 + 20 + 4 + 7 + 4 + 44 + 7, "ends before field 'sig'"),
    ("d_ng_without_separator", lambda: _entry("ima-ng", [b"sha256" + bytes(32), b.n_ng(b"/x")]), 0, NG_HEAD + 8, "not '<alg>:\\0<digest>'"),
    ("d_ng_unknown_algorithm", lambda: _entry("ima-ng", [b"crc32:\0" + bytes(4), b.n_ng(b"/x")]), 0, NG_HEAD + 8, "unknown hash algorithm 'crc32'"),
    ("d_ng_short_digest", lambda: _entry("ima-ng", [b"sha256:\0" + bytes(31), b.n_ng(b"/x")]), 0, NG_HEAD + 8 + 8, "31-byte sha256 digest"),
    ("name_not_nul_terminated", lambda: _entry("ima-ng", [b.d_ng("sha256", bytes(32)), b"/x"]), 0, NG_HEAD + 8 + 40 + 4, "not one NUL-terminated string"),
    ("name_with_inner_nul", lambda: _entry("ima-ng", [b.d_ng("sha256", bytes(32)), b"/x\0/y\0"]), 0, NG_HEAD + 8 + 40 + 4, "not one NUL-terminated string"),
    ("sig_header_short", lambda: _entry("ima-sig", [*_ng(), b"\x03\x02"]), 0, NG_HEAD + 1 + 8 + 40 + 4 + 3 + 4, "shorter than a signature header"),
    ("sig_wrong_xattr_type", lambda: _entry("ima-sig", [*_ng(), b.signature_v2(1, b"s", xtype=1)]), 0, NG_HEAD + 1 + 8 + 40 + 4 + 3 + 4, "xattr type 1"),
    ("sig_size_mismatch", lambda: _entry("ima-sig", [*_ng(), b.signature_v2(1, b"sig")[:-1]]), 0, NG_HEAD + 1 + 8 + 40 + 4 + 3 + 4 + 7, "header says 3 signature bytes"),
    ("modsig_half_present", lambda: _entry("ima-modsig", [*_ng(), b"", b.d_ng("sha256", bytes(32)), b""]), 0, 0, "both present or both empty"),
    ("template_hash_mismatch", _altered, 4, len(b.binary(GOOD[:-1])) + 4, "does not match the template data"),
    ("ima_template_name_over_255", lambda: b.u32(10) + bytes(20) + b.u32(3) + b"ima" + bytes(20) + b.u32(256) + b"a" * 256, 0, 51, "over 255"),
    ("not_an_ima_log", lambda: b"\x0a\x00\x00\x00" + bytes(100), 0, 24, "template name length 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "index", "offset", "fragment"),
    [pytest.param(make(), i, o, f, id=name) for name, make, i, o, f in CASES],
)
def test_hostile_binary_list_is_refused_naming_entry_and_offset(
    data: bytes, index: int, offset: int, fragment: str
) -> None:
    with pytest.raises(MalformedEvidence) as exc:
        parse_ima_log(data)
    assert exc.value.where == f"IMA entry {index}"
    assert exc.value.offset == offset
    assert fragment in str(exc.value)


def test_hostile_offsets_are_absolute_in_a_chunk() -> None:
    bad = _entry("evil", _ng())
    with pytest.raises(MalformedEvidence) as exc:
        parse_ima_log(bad, start_index=40, start_offset=5000)
    assert exc.value.where == "IMA entry 40" and exc.value.offset == 5000 + 28


def test_hostile_input_over_the_size_cap_is_refused_before_parsing() -> None:
    with pytest.raises(MalformedEvidence, match="larger than 100 bytes"):
        parse_ima_log(GOOD_BIN, max_size=100)


def test_hostile_entry_count_over_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import assay.ima._parse as parse

    monkeypatch.setattr(parse, "MAX_ENTRIES", 3)
    with pytest.raises(MalformedEvidence, match="more than 3 entries") as exc:
        parse_ima_log(GOOD_BIN)
    assert exc.value.where == "IMA entry 3"


ASCII = b.ascii_lines(GOOD)
FIRST_LINE = ASCII.index(b"\n") + 1

ASCII_CASES: list[tuple[str, bytes, int, int, str]] = [
    ("ascii_no_final_newline", ASCII[:-1], 4, ASCII.rindex(b"\n", 0, len(ASCII) - 1) + 1, "without a newline"),
    ("ascii_uppercase_hash", ASCII[:FIRST_LINE] + ASCII[FIRST_LINE:].replace(ASCII[FIRST_LINE + 3 : FIRST_LINE + 43], ASCII[FIRST_LINE + 3 : FIRST_LINE + 43].upper(), 1), 1, FIRST_LINE, "lowercase hex"),
    ("ascii_missing_field", ASCII[:FIRST_LINE] + ASCII[FIRST_LINE:].split(b" /usr")[0] + b"\n", 1, FIRST_LINE, "has 2 fields, the line has 1"),
    ("ascii_extra_space_in_name", ASCII[:FIRST_LINE] + ASCII[FIRST_LINE:].replace(b"/usr/bin/prog0", b"/usr/bin/prog 0", 1), 1, FIRST_LINE, "the line has 3"),
    ("ascii_altered_digest", ASCII.replace(b"sha256:" + hashlib.sha256(b"content 1").hexdigest().encode(), b"sha256:" + hashlib.sha256(b"evil").hexdigest().encode()), 2, ASCII.index(b"\n", FIRST_LINE) + 1, "does not match the fields"),
    ("ascii_bad_buf_hex", ASCII[:-2] + b"zz\n", 4, ASCII.rindex(b"\n", 0, len(ASCII) - 1) + 1, "buf field is not lowercase hex"),
    ("ascii_garbage_line", ASCII + b"hello\n", 5, len(ASCII), "not '<pcr> <template hash>"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "index", "offset", "fragment"),
    [pytest.param(d, i, o, f, id=name) for name, d, i, o, f in ASCII_CASES],
)
def test_hostile_ascii_list_is_refused_naming_entry_and_offset(
    data: bytes, index: int, offset: int, fragment: str
) -> None:
    with pytest.raises(MalformedEvidence) as exc:
        parse_ima_log(data)
    assert exc.value.where == f"IMA entry {index}"
    assert exc.value.offset == offset
    assert fragment in str(exc.value)


def test_hostile_ascii_name_with_newline_cannot_pass_as_two_entries() -> None:
    entry = b.file_entry(b"/tmp/a\n10 0000000000000000000000000000000000000000 ima-ng", b"x")
    text = b.ascii_lines([entry])
    with pytest.raises(MalformedEvidence):
        parse_ima_log(text)
    # The binary form carries the same name unambiguously.
    (got,) = parse_ima_log(b.binary([entry])).entries
    assert b"\n" in got.name


def test_template_data_length_is_checked_before_slicing() -> None:
    # A 4 GiB claimed length: refused from the header, without allocating.
    data = b.u32(10) + bytes(20) + b.u32(6) + b"ima-ng" + struct.pack("<I", 0xFFFFFFF0)
    with pytest.raises(MalformedEvidence, match="over the cap"):
        parse_ima_log(data)
