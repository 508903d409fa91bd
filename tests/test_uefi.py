"""assay.uefi: GUIDs, strict signature lists, device-path text, structures; negative vectors; fuzz."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.errors import MalformedEvidence
from assay.eventlog import parse_event_log
from assay.uefi import (
    EFI_CERT_SHA256,
    EFI_CERT_X509,
    EFI_GLOBAL_VARIABLE,
    Guid,
    device_path_to_text,
    parse_firmware_blob,
    parse_firmware_blob2,
    parse_gpt_event,
    parse_handoff_tables,
    parse_image_load_event,
    parse_load_option,
    parse_signature_data,
    parse_signature_lists,
    parse_sp800_155_event,
    parse_startup_locality,
    parse_variable_data,
)
from assay.uefi.sigdb import RequiredIds, check_signature_database

VECTORS = Path(__file__).parent / "vectors" / "uefi"
MS_OWNER = Guid.parse("77fa9abd-0359-4d32-bd60-28f4e78f784b")
UNKNOWN_TYPE = Guid.parse("01234567-89ab-cdef-0123-456789abcdef")  # a signature type of any size


def _event(corpus: Path, name: str, index: int) -> bytes:
    return parse_event_log((corpus / name).read_bytes()).events[index].data


def _node(t: int, s: int, data: bytes) -> bytes:
    return bytes([t, s]) + struct.pack("<H", 4 + len(data)) + data


END = _node(0x7F, 0xFF, b"")


# --- GUID -----------------------------------------------------------------------------------------


def test_guid_text_is_canonical_mixed_endian() -> None:
    raw = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")
    assert str(Guid(raw)) == "8be4df61-93ca-11d2-aa0d-00e098032b8c"
    assert Guid(raw) == EFI_GLOBAL_VARIABLE
    assert Guid(raw).name == "EFI_GLOBAL_VARIABLE"
    assert Guid.parse(str(Guid(raw))).raw == raw


def test_guid_names_cover_signature_types() -> None:
    assert EFI_CERT_X509.name == "EFI_CERT_X509"
    assert str(EFI_CERT_SHA256) == "c1c41626-504c-4092-aca9-41f936934328"
    assert Guid.parse("605dab50-e046-4300-abb6-3dd810dd8b23").name == "SHIM_LOCK"


def test_guid_from_short_bytes_is_malformed() -> None:
    with pytest.raises(MalformedEvidence, match="GUID needs 16 bytes"):
        Guid.from_bytes(b"\x00" * 10)


# --- Signature lists ------------------------------------------------------------------------------


def _sha256_list(*hashes: bytes) -> bytes:
    body = b"".join(MS_OWNER.raw + h for h in hashes)
    return EFI_CERT_SHA256.raw + struct.pack("<III", 28 + len(body), 0, 48) + body


def test_sha256_signature_lists_parse_each_entry() -> None:
    data = _sha256_list(b"\x11" * 32, b"\x22" * 32) + _sha256_list(b"\x33" * 32)
    lists = parse_signature_lists(data)
    assert [len(x.entries) for x in lists] == [2, 1]
    assert [e.data[0] for x in lists for e in x.entries] == [0x11, 0x22, 0x33]
    assert all(e.kind == "sha256" and e.owner == MS_OWNER for x in lists for e in x.entries)


def test_empty_database_is_empty_tuple() -> None:
    assert parse_signature_lists(b"") == ()


def test_secureboot_db_decodes_to_microsoft_certificates(corpus: Path) -> None:
    log = parse_event_log(
        (corpus / "qemu-ovmf-debian12/secureboot-shim-grub-kernel.bin").read_bytes()
    )
    found = {}
    for ev in log.events:
        if ev.event_type == 0x80000001:
            var = parse_variable_data(ev.data)
            if var.name in ("KEK", "db"):
                lists = parse_signature_lists(var.data)
                found[var.name] = [
                    e.certificate.common_name
                    for x in lists
                    for e in x.entries
                    if e.certificate is not None
                ]
    assert "Microsoft Corporation KEK CA 2011" in found["KEK"]
    assert "Microsoft Windows Production PCA 2011" in found["db"]
    assert "Microsoft Corporation UEFI CA 2011" in found["db"]


def test_certificate_fields_of_microsoft_uefi_ca(corpus: Path) -> None:
    data = _event(corpus, "go-attestation/sb_cert_eventlog", 8)
    entry = parse_signature_data(parse_variable_data(data).data)
    cert = entry.certificate
    assert cert is not None
    assert entry.owner is not None and str(entry.owner) == "d281fad2-8d88-47a4-9792-5baa47bb1b89"
    assert cert.subject == (
        "CN=Microsoft Corporation UEFI CA 2011,O=Microsoft Corporation,L=Redmond,ST=Washington,C=US"
    )
    assert "Microsoft Corporation Third Party Marketplace Root" in cert.issuer
    assert cert.serial == 0x6108D3C4000000000004
    assert cert.sha256.hex() == ("48e99b991f57fc52f76149599bff0a58c47154229b9f8d603ac40d3500248507")


def test_shim_authority_bare_certificate_has_no_owner(corpus: Path) -> None:
    data = _event(corpus, "go-attestation/sb_cert_eventlog", 12)
    var = parse_variable_data(data, max_trailing=7)
    assert var.name == "Shim" and len(var.trailing) == 6  # old shim's struct padding
    entry = parse_signature_data(var.data)
    assert entry.owner is None and entry.certificate is not None
    assert entry.kind == "x509"


NEGATIVE = [
    (
        "siglist-size-smaller-than-header.bin",
        parse_signature_lists,
        "SignatureListSize 20 is smaller than the header",
    ),
    (
        "siglist-signature-size-zero.bin",
        parse_signature_lists,
        "SignatureSize 0 is smaller than the owner GUID",
    ),
    (
        "siglist-size-not-multiple.bin",
        parse_signature_lists,
        "list body of 60 bytes is not a multiple of SignatureSize 48",
    ),
    (
        "siglist-sha256-wrong-entry-size.bin",
        parse_signature_lists,
        "SignatureSize 40 is wrong for sha256",
    ),
    (
        "siglist-size-overruns-data.bin",
        parse_signature_lists,
        "SignatureListSize 124 overruns the data",
    ),
    ("siglist-x509-garbage-cert.bin", parse_signature_lists, "not a valid certificate"),
    (
        "variable-huge-name-length.bin",
        parse_variable_data,
        "UnicodeNameLength 4611686018427387904 exceeds",
    ),
    (
        "devicepath-node-length-zero.bin",
        device_path_to_text,
        "node length 0 is below the 4-byte header",
    ),
    ("devicepath-node-overrun.bin", device_path_to_text, "node length 64 overruns"),
    ("gpt-absurd-partition-count.bin", parse_gpt_event, "NumberOfPartitions 1099511627776 exceeds"),
]


@pytest.mark.parametrize(("name", "parser", "message"), NEGATIVE, ids=[n[0] for n in NEGATIVE])
def test_named_negative_vector_is_rejected(name: str, parser: object, message: str) -> None:
    data = (VECTORS / name).read_bytes()
    with pytest.raises(MalformedEvidence, match=message):
        parser(data)  # type: ignore[operator]


def test_every_vector_file_is_in_the_table() -> None:
    assert sorted(p.name for p in VECTORS.glob("*.bin")) == sorted(n[0] for n in NEGATIVE)


# --- Device paths ---------------------------------------------------------------------------------


def test_device_path_text_of_shim_on_gpt_disk() -> None:
    hd = (
        struct.pack("<IQQ", 1, 0x800, 0x100000)
        + Guid.parse("3cb9643c-6c08-4fe5-852d-17e1ae701158").raw
        + bytes([2, 2])
    )
    path = (
        _node(2, 1, struct.pack("<II", 0x0A0341D0, 0))
        + _node(1, 1, bytes([1, 0x1F]))
        + _node(4, 1, hd)
        + _node(4, 4, "\\EFI\\debian\\shimx64.efi\0".encode("utf-16-le"))
        + END
    )
    assert device_path_to_text(path) == (
        "PciRoot(0x0)/Pci(0x1f,0x1)/HD(1,GPT,3cb9643c-6c08-4fe5-852d-17e1ae701158,0x800,0x100000)"
        "/\\EFI\\debian\\shimx64.efi"
    )


def test_device_path_text_of_network_and_firmware_nodes() -> None:
    mac = bytes.fromhex("0cc47aff601c") + bytes(26) + b"\x01"
    ipv4 = bytes([192, 168, 0, 5]) + bytes([192, 168, 0, 1]) + struct.pack("<HHHB", 0, 69, 17, 0)
    ipv4 += bytes([192, 168, 0, 254]) + bytes([255, 255, 255, 0])
    fv = Guid.parse("7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1").raw
    assert device_path_to_text(_node(3, 11, mac) + END) == "MAC(0cc47aff601c,0x1)"
    assert device_path_to_text(_node(3, 12, ipv4) + END) == (
        "IPv4(192.168.0.1,UDP,DHCP,192.168.0.5,192.168.0.254,255.255.255.0)"
    )
    assert device_path_to_text(_node(3, 24, b"http://x/boot.efi") + END) == "Uri(http://x/boot.efi)"
    assert device_path_to_text(_node(4, 7, fv) + _node(4, 6, fv) + END) == (
        f"Fv({Guid(fv)})/FvFile({Guid(fv)})"
    )
    assert (
        device_path_to_text(_node(1, 3, struct.pack("<IQQ", 11, 0xFF000000, 0xFFFFFFFF)) + END)
        == "MemoryMapped(0xb,0xff000000,0xffffffff)"
    )
    assert device_path_to_text(_node(4, 8, struct.pack("<IQQ", 0, 0xF250, 0x201FF))) == (
        "Offset(0xf250,0x201ff)"
    )
    assert device_path_to_text(_node(1, 4, fv + b"\xab")) == f"VenHw({Guid(fv)},ab)"
    assert device_path_to_text(_node(4, 3, fv)) == f"VenMedia({Guid(fv)})"


def test_unknown_node_uses_generic_text_and_instances_join_with_comma() -> None:
    path = _node(0x22, 0x7, b"\x01\x02") + _node(0x7F, 0x01, b"") + _node(3, 5, b"\x0b\x00") + END
    assert device_path_to_text(path) == "Path(34,7,0102),USB(0xb,0x0)"


def test_short_known_node_is_malformed_with_offset() -> None:
    with pytest.raises(MalformedEvidence, match="offset 6: node type 1 subtype 1 too short"):
        device_path_to_text(_node(3, 5, b"\x0b\x00") + _node(1, 1, b"\x01"))


def test_device_path_node_count_is_bounded() -> None:
    with pytest.raises(MalformedEvidence, match="more than 512 nodes"):
        device_path_to_text(_node(3, 5, b"\x01\x00") * 600)


# --- Structures -----------------------------------------------------------------------------------


def test_load_option_decodes_description_and_path(corpus: Path) -> None:
    var = parse_variable_data(_event(corpus, "go-attestation/linux_tpm12.eventlog.bin", 16))
    assert var.name == "Boot0000" and var.guid == EFI_GLOBAL_VARIABLE
    option = parse_load_option(var.data)
    assert option.description == "debian" and option.active
    assert option.device_path_text == (
        "HD(2,GPT,6c6abb6f-d05d-4a9f-ae6f-144542ccaefe,0x1000,0x7a000)/\\EFI\\debian\\grubx64.efi"
    )


def test_image_load_event_fields(corpus: Path) -> None:
    img = parse_image_load_event(_event(corpus, "tpm2-tools/event-uefiservices.bin", 1))
    assert img.length > 0 and img.padding == b""
    assert img.device_path_text.startswith("PciRoot(0x0)/Pci(")


def test_image_load_event_rejects_path_length_past_data() -> None:
    data = struct.pack("<QQQQ", 0, 0, 0, 100) + END
    with pytest.raises(MalformedEvidence, match="LengthOfDevicePath 100 does not match"):
        parse_image_load_event(data)


def test_gpt_event_matches_oracle_header(corpus: Path) -> None:
    gpt = parse_gpt_event(_event(corpus, "python3-uefi-eventlog/rhcos.bin", 24))
    assert str(gpt.header.disk_guid) == "a2683614-6a28-40f4-a339-da6ed6207b87"
    assert gpt.header.alternate_lba == 209715199
    assert gpt.header.partition_entry_array_crc32 == 1083487677
    assert len(gpt.partitions) == 4


def test_handoff_tables_and_blobs() -> None:
    smbios3 = Guid.parse("f2fd1544-9794-4a2c-992e-e5bbcf20e394")
    tables = parse_handoff_tables(
        struct.pack("<Q", 1) + smbios3.raw + struct.pack("<Q", 0xBE366000)
    )
    assert tables.tables == ((smbios3, 0xBE366000),)
    two = parse_handoff_tables(b"\x04ACPI" + struct.pack("<Q", 0), with_description=True)
    assert two.description == "ACPI" and two.tables == ()
    blob = parse_firmware_blob(struct.pack("<QQ", 0x820000, 0xE0000))
    assert (blob.base, blob.length) == (0x820000, 0xE0000)
    blob2 = parse_firmware_blob2(b"\x06fvmain" + struct.pack("<QQ", 1, 2))
    assert blob2.description == "fvmain" and (blob2.base, blob2.length) == (1, 2)
    with pytest.raises(MalformedEvidence, match="trailing"):
        parse_firmware_blob(bytes(17))


def test_startup_locality_and_sp800_155_event3() -> None:
    assert parse_startup_locality(b"StartupLocality\x00\x03") == 3
    body = b"SP800-155 Event3" + struct.pack("<I", 0x157) + bytes(16)
    for s in (b"Acme", b"Model", b"1.0", b"EDK II"):
        body += bytes([len(s)]) + s
    body += struct.pack("<I", 0x157) + b"\x030.7"
    body += struct.pack("<II", 1, 5) + b"http:" + struct.pack("<II", 0, 0)
    event = parse_sp800_155_event(body)
    assert (event.version, event.platform_manufacturer, event.firmware_version) == (
        3,
        "Acme",
        "0.7",
    )
    assert (event.rim_locator_type, event.rim_locator) == (1, b"http:")
    with pytest.raises(MalformedEvidence):
        parse_sp800_155_event(body[:-3])


# --- Fuzz: only MalformedEvidence escapes ---------------------------------------------------------

PARSERS = [
    parse_signature_lists,
    parse_signature_data,
    parse_variable_data,
    parse_load_option,
    device_path_to_text,
    parse_image_load_event,
    parse_gpt_event,
    parse_handoff_tables,
    parse_firmware_blob,
    parse_firmware_blob2,
    parse_sp800_155_event,
    parse_startup_locality,
]


@pytest.mark.parametrize("parser", PARSERS, ids=[p.__name__ for p in PARSERS])
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512))
def test_fuzz_parser_raises_only_malformed_evidence(parser: object, data: bytes) -> None:
    with contextlib.suppress(MalformedEvidence):
        parser(data)  # type: ignore[operator]


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=200),
    list_size=st.integers(0, 400),
    header=st.integers(0, 64),
    sig_size=st.integers(0, 100),
)
def test_fuzz_structured_signature_lists(
    body: bytes, list_size: int, header: int, sig_size: int
) -> None:
    """Any list header and body: the entries fit the data, and the ids the appraisal compares
    are those of the entries, or the same error word for word."""
    for sig_type in (EFI_CERT_SHA256, EFI_CERT_X509, UNKNOWN_TYPE):
        data = sig_type.raw + struct.pack("<III", list_size, header, sig_size) + body
        _same_ids(data)
        try:
            lists = parse_signature_lists(data)
        except MalformedEvidence:
            continue
        assert sum(len(x.entries) for x in lists) * 16 <= len(data)


def _ids_by_full_parse(data: bytes) -> tuple[list[str], list[str]] | str:
    """(ids, certificate ids) as parse_signature_lists' entries name them, else its error."""
    import hashlib

    try:
        lists = parse_signature_lists(data)
    except MalformedEvidence as exc:
        return str(exc)
    entries = [e for x in lists for e in x.entries]
    ids = [
        hashlib.sha256(e.data).hexdigest() if e.kind == "x509" else e.data.hex() for e in entries
    ]
    certificates = [hashlib.sha256(e.data).hexdigest() for e in entries if e.kind == "x509"]
    return ids, certificates


def _ids_fast(data: bytes) -> tuple[list[str], list[str]] | str:
    try:
        got = check_signature_database(data)
    except MalformedEvidence as exc:
        return str(exc)
    return sorted(got.ids), sorted(got.certificates)


def _same_ids(data: bytes) -> None:
    """The ids, and what ``lacks`` answers for ids held, not held and held only at offsets that
    are no entry's data, equal the full parse's (or the error is the same)."""
    full, fast = _ids_by_full_parse(data), _ids_fast(data)
    if isinstance(full, str):
        assert fast == full
        return
    assert fast == (sorted(set(full[0])), sorted(set(full[1])))
    held = set(full[0])
    need = set(held) | _lookalike_ids(data, held)
    for named_first in (False, True):
        db = check_signature_database(data)
        if named_first:
            assert db.ids == held
        assert db.lacks(RequiredIds(need)) == need - held
        assert db.lacks(RequiredIds(held)) == frozenset()


def _lookalike_ids(data: bytes, held: set[str]) -> set[str]:
    """Ids a database must not be taken to hold: the hex of windows of its bytes at every offset
    (most are no entry's data), of every size its entries have and the hash sizes; held ids in
    upper case, with a space, cut short; and strings that are no hex at all."""
    sizes = {len(i) // 2 for i in held} | {20, 32, 48}
    step = max(1, len(data) // 400)
    out = {data[at : at + n].hex() for n in sizes for at in range(0, len(data) - n + 1, step)}
    for i in sorted(held)[:20]:
        out |= {i.upper(), " " + i, i[:-2], i + "00"}
    return out | {"", "zz", "é" * 4}


def test_database_ids_equal_the_full_parse_on_every_corpus_database(corpus: Path) -> None:
    """A checked database's ids (what the appraisal compares) name every entry of every real
    PK/KEK/db/dbx/MokList exactly as the entry objects of parse_signature_lists do."""
    seen = entries = 0
    for log in sorted(corpus.glob("*/*")):
        try:
            events = parse_event_log(log.read_bytes()).events
        except (MalformedEvidence, ValueError):
            continue
        for ev in events:
            if ev.event_type not in (0x80000001, 0x80000002):
                continue
            try:
                var = parse_variable_data(ev.data)
            except MalformedEvidence:
                continue
            if var.name in ("PK", "KEK", "db", "dbx", "MokList", "MokListX") and var.data:
                _same_ids(var.data)
                seen += 1
                full = _ids_by_full_parse(var.data)
                entries += 0 if isinstance(full, str) else len(full[0])
    assert seen > 40 and entries > 2000, (seen, entries)


@pytest.mark.parametrize("count", [0, 1, 63, 64, 65, 128, 129, 300])
@pytest.mark.parametrize("sig_size", [16, 17, 48, 52, 64 + 16])
def test_database_ids_of_hash_lists_around_the_block_size(count: int, sig_size: int) -> None:
    """Entries are read 64 at a time: every count around that, for fixed and unknown types, gives
    each entry's own data (owner left out) in order, as the full parser does."""
    sig_type = EFI_CERT_SHA256 if sig_size == 48 else UNKNOWN_TYPE
    body = b"".join(
        MS_OWNER.raw + bytes((i * 7 + j) % 256 for j in range(sig_size - 16)) for i in range(count)
    )
    data = sig_type.raw + struct.pack("<III", 28 + len(body), 0, sig_size) + body
    data += _sha256_list(b"\x33" * 32)  # a second list after it
    _same_ids(data)
    got = check_signature_database(data).ids
    assert len(got) == len({body[p + 16 : p + sig_size] for p in range(0, len(body), sig_size)}) + 1
    assert (b"\x33" * 32).hex() in got


def test_lacks_counts_only_an_entrys_whole_data() -> None:
    """A required id is held only as the whole data of one entry of the size it names: bytes that
    straddle two entries, include an owner GUID or start an entry but stop short are not held, in
    whichever list (fixed or unknown type) the entry is."""
    a, b, c, d = (bytes([x]) * 16 + bytes(range(x, x + 16)) for x in (0x11, 0x22, 0x33, 0x44))
    sha1 = bytes(range(20))
    unknown = UNKNOWN_TYPE.raw + struct.pack("<III", 28 + 48, 0, 48) + MS_OWNER.raw + c
    sha1_list = Guid.parse("826ca512-cf10-4ac9-b187-be01496631bd").raw  # EFI_CERT_SHA1_GUID
    sha1_list += struct.pack("<III", 28 + 36, 0, 36) + MS_OWNER.raw + sha1
    data = _sha256_list(a, b) + unknown + sha1_list
    db = check_signature_database(data)
    held = {a.hex(), b.hex(), c.hex(), sha1.hex()}
    tricks = {
        (a[8:] + MS_OWNER.raw[:8]).hex(),  # runs from one entry into the next's owner
        (MS_OWNER.raw + a[:16]).hex(),  # an owner GUID and half an entry
        a[:20].hex(),  # where an entry starts, but a SHA-1's length in a SHA-256 list
        sha1.hex() + "00" * 12,  # a SHA-1 entry read as a SHA-256 one
        d.hex(),
        a.hex().upper(),
        "",
    }
    assert db.lacks(RequiredIds(held | tricks)) == tricks
    assert db.lacks(RequiredIds(held)) == frozenset()
    assert check_signature_database(data).ids == held
    assert db.ids == held and db.lacks(RequiredIds(held | tricks)) == tricks
    # A value, as the frozenset it replaced in a compiled policy: equal ids, equal requirement.
    assert RequiredIds(sorted(held)) == RequiredIds(held) != RequiredIds(tricks)
    assert hash(RequiredIds(sorted(held))) == hash(RequiredIds(held))


# Real PK and db certificates whose serial number is zero or negative (RFC 5280 forbids it;
# cryptography warns that it will refuse them): the logs that carry them, and how many.
NONPOSITIVE_SERIAL_LOGS = {
    "python3-uefi-eventlog/201123-eventlog.bin": [("db", "SUPERMICRO Product CA 2018")],
    "python3-uefi-eventlog/bootlog-5.0.0-rhel-20210423T133156Z_8b0347a.bin": [
        ("db", "SUPERMICRO Product CA 2018")
    ],
    "python3-uefi-eventlog/thyme-eventlog.bin": [
        ("PK", "Ideapad Products"),
        ("db", "AVY740-1517ICH"),
    ],
    "tpm2-tools/event-postcode.bin": [("db", "SUPERMICRO Product CA 2018")],
}


def _database_certificates(log: Path) -> list[tuple[str, bytes]]:
    """(variable, DER) for every X.509 entry of PK, KEK, db in the log, by our list parser."""
    out = []
    for ev in parse_event_log(log.read_bytes()).events:
        if ev.event_type != 0x80000001:
            continue
        var = parse_variable_data(ev.data)
        if var.name in ("PK", "KEK", "db"):
            for lst in parse_signature_lists(var.data):
                out += [(var.name, e.data) for e in lst.entries if e.kind == "x509"]
    return out


@pytest.mark.parametrize("name", sorted(NONPOSITIVE_SERIAL_LOGS))
def test_nonpositive_serial_certificates_are_kept_and_read_like_cryptography(
    corpus: Path, name: str
) -> None:
    import warnings

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from assay.uefi.signatures import X509Certificate

    seen = []
    for variable, der in _database_certificates(corpus / name):
        ours = X509Certificate.from_der(der)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the oracle: cryptography as it still parses them
            theirs = x509.load_der_x509_certificate(der)
            serial = theirs.serial_number
            cns = [
                theirs.subject.get_attributes_for_oid(NameOID.COMMON_NAME),
                theirs.issuer.get_attributes_for_oid(NameOID.COMMON_NAME),
            ]
        if serial > 0:
            assert ours.unparsed is None and ours.certificate is not None
            continue
        seen.append((variable, ours.common_name))
        assert ours.certificate is None and ours.unparsed is not None
        assert ours.serial == serial
        assert ours.common_name == cns[0][0].value
        assert ours.issuer == f"CN={cns[1][0].value}"
        assert ours.to_json()["unparsed"] == f"serial number {serial} is not positive (RFC 5280)"
    assert seen == NONPOSITIVE_SERIAL_LOGS[name]


def test_nonpositive_serial_does_not_excuse_a_broken_certificate(corpus: Path) -> None:
    from assay.uefi.signatures import X509Certificate

    name = "tpm2-tools/event-postcode.bin"
    der = next(
        d for _, d in _database_certificates(corpus / name)
        if X509Certificate.from_der(d).unparsed is not None
    )  # fmt: skip
    # The signature value is not a BIT STRING: refused, serial or not.
    body = bytearray(der)
    body[_signature_value_offset(der)] = 0x04  # OCTET STRING
    with pytest.raises(MalformedEvidence, match="not a valid certificate"):
        X509Certificate.from_der(bytes(body))
    # Cut short inside tbsCertificate: refused.
    with pytest.raises(MalformedEvidence):
        X509Certificate.from_der(der[:40])


def _signature_value_offset(der: bytes) -> int:
    from assay.uefi.signatures import _tlv

    _, s, e = _tlv(der, 0, len(der))
    _, _, te = _tlv(der, s, e)
    _, _, ae = _tlv(der, te, e)
    return ae


# -- certificate names: validated without building them when they have the plain shape -----------


def _corpus_database_certificates(corpus: Path) -> list[bytes]:
    out: dict[bytes, None] = {}
    for log in sorted(corpus.glob("*/*")):
        try:
            certs = _database_certificates(log)
        except (MalformedEvidence, UnicodeDecodeError, ValueError):
            continue
        out.update((der, None) for _, der in certs)
    return list(out)


def _name_values(der: bytes) -> list[int]:
    """Offsets of the tag byte of every attribute value in issuer and subject (short forms)."""

    def tlv(pos: int) -> tuple[int, int]:  # (content start, end)
        first = der[pos + 1]
        if first < 0x80:
            return pos + 2, pos + 2 + first
        n = first & 0x7F
        start = pos + 2 + n
        return start, start + int.from_bytes(der[pos + 2 : start], "big")

    pos = tlv(tlv(0)[0])[0]  # tbsCertificate's content
    if der[pos] == 0xA0:
        pos = tlv(pos)[1]
    fields = []
    for _ in range(5):  # serial, signature, issuer, validity, subject
        start, end = tlv(pos)
        fields.append((start, end))
        pos = end
    out = []
    for start, end in (fields[2], fields[4]):
        p = start
        while p < end:
            s, e = tlv(p)  # RDN
            q = s
            while q < e:
                a, b = tlv(q)  # attribute
                out.append(tlv(a)[1])  # the value's tag, after the OID
                q = b
            p = e
    return out


def _cryptography_accepts(der: bytes) -> bool:
    """The oracle: load and build every field we show, as the check did before names of the
    plain shape were spared the building."""
    import warnings

    from cryptography import x509
    from cryptography.utils import CryptographyDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        try:
            cert = x509.load_der_x509_certificate(der)
            _ = (cert.version, cert.serial_number, cert.subject, cert.issuer)
        except Exception:
            return False
    return True


def _names_build(der: bytes) -> bool:
    """Whether cryptography builds this certificate's issuer and subject (its warning about a
    serial number that is not positive aside); True, vacuously, when it does not load at all."""
    import warnings

    from cryptography import x509

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return True
        try:
            _ = (cert.subject, cert.issuer)
        except Exception:
            return False
    return True


def test_corpus_certificate_names_are_plain_so_they_are_not_built(corpus: Path) -> None:
    from assay.uefi.signatures import _plain_names

    ders = _corpus_database_certificates(corpus)
    assert len(ders) >= 20
    plain = [d for d in ders if _plain_names(d)]
    assert all(_names_build(d) for d in plain)
    # Every real certificate of the corpus takes the cheap path.
    assert len(plain) == len(ders), (len(plain), len(ders))


def test_certificate_name_check_refuses_exactly_what_cryptography_refuses(corpus: Path) -> None:
    """Every attribute value of real certificates' names, retagged as every string-ish type and
    given an invalid UTF-8 byte: the check (plain shape, else build the names) accepts a mutant
    exactly when building its names does, and never calls a name plain that would not build."""
    from assay.uefi.signatures import _load_strictly, _plain_names

    tags = (0x03, 0x04, 0x0C, 0x12, 0x13, 0x14, 0x16, 0x17, 0x1A, 0x1C, 0x1E, 0x02, 0x05, 0x30)
    ders = [d for d in _corpus_database_certificates(corpus) if _cryptography_accepts(d)][:6]
    tried = refused = 0
    for der in ders:
        for at in _name_values(der):
            variants = [bytes(der[:at]) + bytes([t]) + der[at + 1 :] for t in tags]
            body = bytearray(der)
            if der[at + 1] > 0:
                body[at + 2] = 0xFF  # invalid UTF-8 in any string type
                variants.append(bytes(body))
            for mutant in variants:
                tried += 1
                expected = _cryptography_accepts(mutant)
                if _plain_names(mutant):
                    assert _names_build(mutant), mutant.hex()
                try:
                    _load_strictly(mutant, "test")
                    got = True
                except MalformedEvidence:
                    got = False
                refused += not got
                assert got == expected, (at, mutant.hex())
    assert tried > 500 and refused > 100, (tried, refused)
