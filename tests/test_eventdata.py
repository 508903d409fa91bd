"""assay.eventdata: every event of every real log decodes; fields match the hand-checked oracles."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.errors import MalformedEvidence
from assay.eventdata import (
    BlobEvent,
    IplString,
    SeparatorEvent,
    StartupLocalityEvent,
    TaggedEvent,
    VariableEvent,
    decode_event_data,
)
from assay.eventlog import Event, parse_event_log
from assay.events import EventType
from assay.uefi.variables import FlagValue, SignatureDatabase

from .conftest import CORPUS, load_manifest

REAL_LOGS = [r["file"] for r in load_manifest() if r["category"] != "malformed"]

# Corpus events whose data is malformed for its type, with the reason. Empty: every event of every
# real log decodes (shim's padding and TPM 1.2-era multi-variable events are tolerated by name).
EXPECTED_MALFORMED: dict[tuple[str, int], str] = {}


def _events(name: str) -> tuple[Event, ...]:
    return parse_event_log((CORPUS / name).read_bytes()).events


@pytest.mark.parametrize("name", REAL_LOGS)
def test_every_event_of_real_log_decodes(name: str) -> None:
    for event in _events(name):
        try:
            decoded = decode_event_data(event.event_type, event.data)
        except MalformedEvidence as exc:
            assert (name, event.index) in EXPECTED_MALFORMED, f"event {event.index}: {exc}"
            continue
        line = decoded.describe()
        assert line and "\n" not in line
        json.dumps(decoded.to_json())


def _oracle_pairs(oracle: Path, log: str) -> list[tuple[Event, dict[str, Any]]]:
    doc = (
        json.loads(oracle.read_text())
        if oracle.suffix == ".json"
        else yaml.safe_load(oracle.read_text())
    )
    by_index = {e.index: e for e in _events(log)}
    if not isinstance(doc["events"], list):
        # tpm2-tools' event-uefi-sha1-log fixture is one mapping with repeated keys: nothing to pair.
        return []
    return [(by_index[o["EventNum"]], o) for o in doc["events"] if o["EventNum"] in by_index]


JSON_ORACLES = sorted(CORPUS.glob("python3-uefi-eventlog/*.hand-corrected-tpm2_eventlog.json"))


@pytest.mark.parametrize("oracle", JSON_ORACLES, ids=[p.name[:24] for p in JSON_ORACLES])
def test_fields_match_hand_corrected_oracle(oracle: Path) -> None:
    log = str(oracle.relative_to(CORPUS)).removesuffix(".hand-corrected-tpm2_eventlog.json")
    checked = 0
    for event, want in _oracle_pairs(oracle, log):
        got = decode_event_data(event.event_type, event.data)
        checked += _compare(got, want)
    assert checked >= 10


def _compare(got: object, want: dict[str, Any]) -> int:
    """Compare the fields both sides define; returns how many events were compared."""
    event = want.get("Event")
    if isinstance(got, VariableEvent) and isinstance(event, dict):
        assert str(got.guid) == event["VariableName"]
        assert got.name == event["UnicodeName"]
        assert len(got.data) == event["VariableDataLength"]
        value = event.get("VariableData")
        if got.name == "SecureBoot" and isinstance(value, dict):
            assert isinstance(got.value, FlagValue)
            assert got.value.value == (1 if value["Enabled"] == "Yes" else 0)
        if got.name == "BootOrder" and isinstance(value, list):
            assert [f"Boot{v:04x}" for v in got.value.values] == value  # type: ignore[union-attr]
        return 1
    if isinstance(got, BlobEvent) and isinstance(event, dict) and "BlobBase" in event:
        assert (got.base, got.length) == (event["BlobBase"], event["BlobLength"])
        return 1
    if isinstance(got, IplString) and isinstance(event, dict) and "String" in event:
        assert got.text == event["String"].rstrip("\0")
        return 1
    if isinstance(got, SeparatorEvent) and isinstance(event, str):
        assert got.data.hex() == event
        return 1
    return 0


YAML_ORACLES = sorted(
    p for p in CORPUS.glob("*/*.upstream-fixture.yaml") if "specid-vendordata" not in p.name
)  # a malformed log: the parser rejects it


def _tpm2_tools_path(text: str) -> str:
    """tpm2-tools writes ``File(x)``, ``FvVol(g)``; the UEFI text form is ``x``, ``Fv(g)``."""
    return re.sub(r"File\(([^)]*)\)", r"\1", text).replace("FvVol(", "Fv(")


_COMPARABLE = re.compile(r"^((PciRoot|Pci|HD|Offset|Fv|FvFile|VenHw)\([^)]*\)|\\[^/]*)(/|$)")


@pytest.mark.parametrize("oracle", YAML_ORACLES, ids=[p.name[:30] for p in YAML_ORACLES])
def test_fields_match_tpm2_tools_fixture(oracle: Path) -> None:
    log = str(oracle.relative_to(CORPUS)).removesuffix(".upstream-fixture.yaml")
    if log.endswith(".bin.tpm2-tools-upstream-fixture.yaml"):
        log = log.removesuffix(".tpm2-tools-upstream-fixture.yaml")
    if not (CORPUS / log).is_file():
        log = str(oracle.relative_to(CORPUS)).removesuffix(".tpm2-tools-upstream-fixture.yaml")
    for event, want in _oracle_pairs(oracle, log):
        got = decode_event_data(event.event_type, event.data)
        body = want.get("Event")
        if not isinstance(body, dict):
            continue
        path = body.get("DevicePath")
        if isinstance(path, str) and path and hasattr(got, "device_path_text"):
            expected = _tpm2_tools_path(path)
            if all(_COMPARABLE.match(p + "/") for p in expected.split("/") if p):
                assert got.device_path_text == expected
        if isinstance(got, VariableEvent):
            assert got.name == body["UnicodeName"]
            assert str(got.guid) == body["VariableName"]


def test_secureboot_log_names_microsoft_and_debian_keys() -> None:
    decoded = {
        e.index: decode_event_data(e.event_type, e.data)
        for e in _events("qemu-ovmf-debian12/secureboot-shim-grub-kernel.bin")
    }
    variables = {
        d.name: d
        for d in decoded.values()
        if isinstance(d, VariableEvent) and (not d.authority or d.name != "db")
    }
    assert variables["SecureBoot"].value == FlagValue(1)
    db = variables["db"].value
    assert isinstance(db, SignatureDatabase)
    assert variables["db"].describe().startswith("db: 2 certificates (")
    assert {e.certificate.common_name for e in db.certificates if e.certificate} == {
        "Microsoft Windows Production PCA 2011",
        "Microsoft Corporation UEFI CA 2011",
    }
    assert variables["SbatLevel"].describe().startswith("SbatLevel: sbat,1,2025021800")
    mok = variables["MokListRT"]
    assert mok.authority and "Debian Secure Boot CA" in mok.describe()


def test_keylime_secureboot_log_has_red_hat_vendor_db() -> None:
    decoded = [
        decode_event_data(e.event_type, e.data)
        for e in _events("keylime/binary_bios_measurements-secureboot")
    ]
    authorities = [d for d in decoded if isinstance(d, VariableEvent) and d.authority]
    vendor = [d for d in authorities if d.name == "vendor_db"]
    assert vendor and "Red Hat Secure Boot CA" in vendor[0].describe()


def test_grub_and_kernel_command_lines_keep_the_exact_string() -> None:
    decoded = [
        decode_event_data(e.event_type, e.data) for e in _events("go-tpm-tools/rhel8-uefi.bin")
    ]
    ipl = [d for d in decoded if isinstance(d, IplString)]
    assert IplString("grub_cmd", "grub_cmd set pager=1", "ascii", "set pager=1") in ipl
    cmdline = [d for d in ipl if d.kind == "kernel_cmdline"]
    assert len(cmdline) == 1 and cmdline[0].text.startswith(
        "grub_kernel_cmdline (hd0,gpt2)/boot/vmlinuz-4.18.0-240.22.1.el8_3.x86_64 root=UUID="
    )


def test_systemd_boot_utf16_cmdline_and_initrd_tag() -> None:
    decoded = {
        e.index: decode_event_data(e.event_type, e.data)
        for e in _events("tpm2-tools/event-sd-boot-fedora37.bin")
    }
    cmdline = decoded[23]
    assert isinstance(cmdline, IplString) and cmdline.encoding == "utf-16le"
    assert cmdline.kind == "kernel_cmdline"
    assert cmdline.text.startswith(" console=ttyS0 console=tty0 efi=debug")
    tag = decoded[25]
    assert isinstance(tag, TaggedEvent)
    assert (tag.tag_id, tag.kind, tag.text) == (0x8F3B22EC, "linux_initrd", "Linux initrd")


def test_windows_separators_startup_locality_and_unknown_types() -> None:
    assert decode_event_data(EventType.EV_SEPARATOR, b"WBCL").describe() == 'separator "WBCL"'
    error = decode_event_data(EventType.EV_SEPARATOR, b"\xff\xff\xff\xff")
    assert isinstance(error, SeparatorEvent) and error.is_error
    loc = decode_event_data(EventType.EV_NO_ACTION, b"StartupLocality\x00\x03")
    assert loc == StartupLocalityEvent(3)
    raw = decode_event_data(0x8401, b"\x01")
    assert raw.to_json() == {"kind": "raw", "data": "01", "note": "unknown event type"}


@pytest.mark.parametrize(
    ("event_type", "data", "message"),
    [
        (EventType.EV_SEPARATOR, b"\x00\x00", "separator data must be 4 bytes"),
        (EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, b"\x00" * 20, "UnicodeNameLength: needs 8 bytes"),
        (EventType.EV_EVENT_TAG, b"\x01\x00\x00\x00\x09\x00\x00\x00ab", "taggedEventDataSize 9"),
        (EventType.EV_EFI_ACTION, b"\xff\xfe", "not ASCII"),
    ],
)
def test_known_type_with_malformed_data_raises(event_type: int, data: bytes, message: str) -> None:
    with pytest.raises(MalformedEvidence, match=message):
        decode_event_data(event_type, data)


def test_poisoned_db_variable_is_rejected() -> None:
    name = "db".encode("utf-16-le")
    bad_list = bytes.fromhex("2616c4c14c509240aca941f936934328") + bytes.fromhex(
        "1c0000000000000000000000"
    )
    data = (
        bytes.fromhex("cbb219d73a3d9645a3bcdad00e67656f")
        + (2).to_bytes(8, "little")
        + len(bad_list).to_bytes(8, "little")
        + name
        + bad_list
    )
    with pytest.raises(MalformedEvidence, match="SignatureSize 0"):
        decode_event_data(EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, data)


KNOWN_TYPES = [int(t) for t in EventType]


@settings(max_examples=400, deadline=None)
@given(event_type=st.sampled_from(KNOWN_TYPES), data=st.binary(max_size=300))
def test_fuzz_decode_raises_only_malformed_evidence(event_type: int, data: bytes) -> None:
    with contextlib.suppress(MalformedEvidence):
        decoded = decode_event_data(event_type, data)
        decoded.describe()
        json.dumps(decoded.to_json())
