"""The ``eventlog`` command line as users run it: output schema, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CORPUS


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verifier", *args], capture_output=True, text=True, timeout=60
    )


def test_replay_json_matches_expected_pcrs() -> None:
    log = CORPUS / "qemu-ovmf-debian12/secureboot-shim-grub-kernel.bin"
    expected = json.loads(log.with_name(log.stem + ".expected_pcrs.json").read_text())["pcrs"]
    proc = run("eventlog", "replay", str(log), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) >= {"banks", "workarounds", "warnings"}
    assert set(doc["banks"]) == {"sha1", "sha256", "sha384", "sha512"}
    for bank, values in doc["banks"].items():
        for pcr, value in values.items():
            assert value == expected[bank][pcr].lower(), f"{bank} PCR{pcr}"
    assert doc["banks"]["sha256"]["4"] == expected["sha256"]["4"].lower()


def test_replay_reports_shim_workaround() -> None:
    proc = run("eventlog", "replay", str(CORPUS / "go-tpm-tools/cos-85-amd-sev.bin"), "--json")
    doc = json.loads(proc.stdout)
    names = {w["name"] for w in doc["workarounds"]}
    assert names == {"shim-authority-one-byte-short"}
    assert all(w["pcr"] == 7 for w in doc["workarounds"])


def test_show_json_lists_every_event_with_decoded_data() -> None:
    log = CORPUS / "qemu-ovmf-debian12/secureboot-shim-grub-kernel.bin"
    proc = run("eventlog", "show", str(log), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["events"]) == 50
    shim = doc["events"][23]
    assert shim["type_name"] == "EV_EFI_BOOT_SERVICES_APPLICATION"
    assert shim["digests"]["sha256"].startswith("80a66d53a945d228")
    assert "BOOTX64.EFI" in shim["description"]
    assert doc["events"][4]["description"] == "SecureBoot = 1"


def test_show_table_is_readable() -> None:
    proc = run("eventlog", "show", str(CORPUS / "tpm2-tools/event-sd-boot-fedora37.bin"))
    assert proc.returncode == 0
    assert "EV_EFI_ACTION" in proc.stdout and "Exit Boot Services Invocation" in proc.stdout


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("keylime/binary_bios_measurements-bogus", "PCR index 1969712994 out of range"),
        ("keylime/binary_bios_measurements-empty", "event log is empty"),
        ("tpm2-tools/specid-vendordata.bin", "Spec ID event size 37"),
    ],
)
def test_malformed_log_exits_2_with_one_line_naming_file(path: str, message: str) -> None:
    proc = run("eventlog", "replay", str(CORPUS / path), "--json")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert path in lines[0] and message in lines[0]
    assert proc.stdout == ""


def test_missing_file_exits_2(tmp_path: Path) -> None:
    proc = run("eventlog", "show", str(tmp_path / "nope.bin"))
    assert proc.returncode == 2
    assert "No such file" in proc.stderr and "Traceback" not in proc.stderr


def test_help_describes_replay_rules() -> None:
    proc = run("eventlog", "replay", "--help")
    assert proc.returncode == 0
    assert "EV_NO_ACTION" in proc.stdout
