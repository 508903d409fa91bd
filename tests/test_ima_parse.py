"""IMA measurement lists: the public vectors and logs made to the kernel's format parse to the
values the kernel wrote."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence
from assay.ima import escape_name, load_key, parse_ima_log, parse_selinux_state, verify_signature

from . import imalogbuilder as b

VECTORS = Path(__file__).parent / "vectors" / "ima"


def _vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_keylime_ima_sig_vector_parses_every_field() -> None:
    log = parse_ima_log(_vector("keylime-openpower-ima-sig.ascii"))
    assert log.format == "ascii" and log.template_hash_alg is HashAlg.SHA1
    assert [e.display_name for e in log.entries] == [
        "boot_aggregate",
        "/lib/modules/5.4.48-openpower1/kernel/drivers/usb/common/usb-common.ko",
        "/lib/modules/5.4.48-openpower1/kernel/drivers/gpu/drm/drm_panel_orientation_quirks.ko",
        "/usr/bin/dd",
        "/usr/bin/zmore",
    ]
    dd = log.entries[3]
    assert dd.template == "ima-sig" and dd.digest_alg == "sha256"
    assert dd.digest.hex() == "d33d5d13792292e202dbf69a6f1b07bc8a02f01424db8489ba7bb7d43c0290ef"
    assert dd.sig is not None and dd.sig.keyid == 0xF3452D23 and dd.sig.version == 2
    assert dd.sig.hash_algo == "sha256" and len(dd.sig.signature) == 256
    assert log.entries[0].sig is None  # an empty sig field: the line ends in a space
    # Offsets are byte positions of the lines.
    data = _vector("keylime-openpower-ima-sig.ascii")
    assert data[dd.offset : dd.offset + dd.size].startswith(b"10 1e70a3e1")
    assert dd.offset + dd.size == data.index(b"10 5d4d5141")


def test_keylime_signatures_verify_with_their_published_keys() -> None:
    log = parse_ima_log(_vector("keylime-openpower-ima-sig.ascii"))
    keys = (
        load_key(_vector("keylime-rsa2048.pub.pem"), "rsa"),
        load_key(_vector("keylime-secp256k1.pub.pem"), "ec"),
    )
    assert [k.keyid_hex for k in keys] == ["f3452d23", "531f4025"]
    outcomes = [
        verify_signature(e.sig, e.digest_alg, e.digest, keys)[0] for e in log.entries if e.sig
    ]
    assert outcomes == ["valid", "valid"]
    dd = log.entries[3]
    assert dd.sig is not None
    flipped = bytes([dd.digest[0] ^ 1]) + dd.digest[1:]
    assert verify_signature(dd.sig, "sha256", flipped, keys)[0] == "invalid"
    assert verify_signature(dd.sig, "sha256", dd.digest, keys[1:])[0] == "unknown_key"
    assert verify_signature(dd.sig, "sha512", dd.digest, keys)[0] == "invalid"


def test_keylime_keyring_entry_is_an_ima_buf_holding_the_certificate() -> None:
    (entry,) = parse_ima_log(_vector("keylime-ima-keyring.ascii")).entries
    assert entry.template == "ima-buf" and entry.name == b".ima"
    assert entry.buf is not None and entry.buf[:2] == b"\x30\x82"  # a DER certificate
    assert hashlib.sha256(entry.buf).digest() == entry.digest


def test_made_binary_and_ascii_forms_parse_to_the_same_entries() -> None:
    made = b.typical(4)
    binary = parse_ima_log(b.binary(made))
    text = parse_ima_log(b.ascii_lines(made))
    assert (binary.format, text.format) == ("binary", "ascii")
    assert len(binary.entries) == len(made) == 7
    for x, y in zip(binary.entries, text.entries, strict=True):
        assert x._replace(offset=0, size=0) == y._replace(offset=0, size=0)
    assert binary.end_offset == len(b.binary(made))
    assert binary.entries[1].name == b"/usr/bin/prog0"
    assert binary.entries[1].digest == hashlib.sha256(b"content 0").digest()


@pytest.mark.parametrize("template", ["ima-ng", "ima-sig", "ima-buf", "ima-modsig", "ima"])
def test_made_template_fields_decode(template: str) -> None:
    sig = b.signature_v2(0x01020304, b"\x55" * 64)
    entry = b.file_entry(b"/usr/sbin/sshd", b"sshd", template=template, sig=sig)
    (got,) = parse_ima_log(b.binary([entry])).entries
    assert got.template == template and got.name == b"/usr/sbin/sshd"
    if template == "ima":
        assert got.digest_alg == "sha1" and got.digest == hashlib.sha1(b"sshd").digest()
        assert len(got.template_data) == 20 + 256  # digest + name padded to 256
    else:
        assert got.digest_alg == "sha256" and got.digest == hashlib.sha256(b"sshd").digest()
    assert (got.sig is not None) == (template in ("ima-sig", "ima-modsig"))
    if got.sig is not None:
        assert got.sig.keyid == 0x01020304 and got.sig.signature == b"\x55" * 64
    assert (got.buf is not None) == (template == "ima-buf")


def test_made_modsig_entry_keeps_the_appended_signature() -> None:
    entry = b.modsig_entry(b"/lib/modules/x.ko", b"module", b"\x30\x80pkcs7")
    (got,) = parse_ima_log(b.binary([entry])).entries
    assert got.modsig is not None and got.modsig.signature == b"\x30\x80pkcs7"
    assert got.modsig.digest == hashlib.sha256(b"module").digest() and got.sig is None


def test_made_violation_carries_a_20_byte_zero_digest_under_any_algorithm() -> None:
    (got,) = parse_ima_log(b.binary([b.violation_entry(b"/var/log/wtmp")])).entries
    assert got.violation and got.template_hash == bytes(20)
    assert got.digest_alg == "sha256" and got.digest == bytes(20)


def test_made_per_bank_binary_file_is_detected_by_hash_size() -> None:
    made = b.typical(2)
    log = parse_ima_log(b.binary(made, hash_alg="sha256"))
    assert log.template_hash_alg is HashAlg.SHA256
    assert log.entries[1].template_hash == hashlib.sha256(made[1].hashed()).digest()
    text = parse_ima_log(b.ascii_lines(made, hash_alg="sha512"))
    assert text.template_hash_alg is HashAlg.SHA512


def test_made_ascii_pcr_below_10_has_the_kernels_leading_space() -> None:
    entry = b.file_entry(b"/etc/passwd", b"root", pcr=9)
    line = b.ascii_lines([entry])
    assert line.startswith(b" 9 ")
    assert parse_ima_log(line).entries[0].pcr == 9
    with pytest.raises(MalformedEvidence, match="'%2d'"):
        parse_ima_log(line[1:])


def test_made_custom_template_format_is_read_by_its_fields() -> None:
    e = b.Made("d-ng|n-ng|buf", [b.d_ng("sha256", bytes(32)), b.n_ng(b"x"), b"hello"])
    (got,) = parse_ima_log(b.binary([e])).entries
    assert got.template == "d-ng|n-ng|buf" and got.buf == b"hello"
    assert parse_ima_log(b.ascii_lines([e])).entries[0].buf == b"hello"


def test_made_chunk_carries_absolute_indices_and_offsets() -> None:
    made = b.typical(3)
    whole = b.binary(made)
    full = parse_ima_log(whole)
    cut = full.entries[2].offset
    chunk = parse_ima_log(whole[cut:], start_index=2, start_offset=cut)
    assert chunk.entries == full.entries[2:]
    assert chunk.end_offset == len(whole)


def test_hostile_names_are_shown_escaped() -> None:
    name = b"/tmp/\x1b[31mred\nnext\\\xff\xfe"
    (got,) = parse_ima_log(b.binary([b.file_entry(name, b"x")])).entries
    assert got.name == name
    shown = got.display_name
    assert shown == "/tmp/\\x1b[31mred\\x0anext\\\\\\xff\\xfe" and shown.isprintable()
    assert escape_name("/usr/bin/ünïcode".encode()) == "/usr/bin/ünïcode"


def test_empty_input_is_an_empty_log() -> None:
    log = parse_ima_log(b"", start_index=7, start_offset=700)
    assert log.entries == () and log.end_offset == 700


def test_selinux_state_decodes_to_its_flags() -> None:
    text = b"initialized=1;enforcing=1;checkreqprot=0;network_peer_controls=1;open_perms=0;"
    state = parse_selinux_state(text)
    assert (state.initialized, state.enforcing, state.checkreqprot) == (True, True, False)
    assert dict(state.capabilities) == {"network_peer_controls": True, "open_perms": False}
    for bad in (
        b"initialized=1;enforcing=1;",  # no checkreqprot
        b"initialized=1;enforcing=2;checkreqprot=0;",
        b"initialized=1;enforcing=1;checkreqprot=0;enforcing=0;",  # twice
        b"initialized=1;enforcing=1;checkreqprot=0",  # no final ';'
    ):
        with pytest.raises(MalformedEvidence):
            parse_selinux_state(bad)
