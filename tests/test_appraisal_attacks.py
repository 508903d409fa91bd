"""MISSION.md attacks on the appraisal, each as a real log with one change: never a trusted verdict.

Every case starts from the real Debian Secure Boot log (trusted against its own capture) and inserts,
retypes or removes events so that the log still replays to itself (a node could quote it), then
checks the verdict and the reason code.
"""

from __future__ import annotations

import datetime as dt
import struct

import pytest

from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from assay.events import EventType
from golden.capture import capture
from verifier.appraisal import Verdict, appraise, compile_golden

from .conftest import CORPUS
from .logbuilder import variable_data, variable_name, variable_value

NOW = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
SB_LOG = (CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin").read_bytes()
BANKS = (HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512)


def _event(pcr: int, etype: int, data: bytes) -> bytes:
    out = struct.pack("<III", pcr, etype, len(BANKS))
    for alg in BANKS:
        out += struct.pack("<H", int(alg)) + alg.hash(data)
    return out + struct.pack("<I", len(data)) + data


def _insert_before(data: bytes, index: int, record: bytes) -> bytes:
    at = parse_event_log(data).events[index].offset
    return data[:at] + record + data[at:]


def _remove(data: bytes, index: int) -> bytes:
    events = parse_event_log(data).events
    end = events[index + 1].offset if index + 1 < len(events) else len(data)
    return data[: events[index].offset] + data[end:]


def _verdict(data: bytes) -> Verdict:
    golden = capture(
        assume_quoted_for_review(parse_event_log(SB_LOG), HashAlg.SHA256), name="sb", version="1"
    )
    vlog = assume_quoted_for_review(parse_event_log(data), HashAlg.SHA256)
    return appraise(vlog, compile_golden([golden], now=NOW))


def _failing_reasons(verdict: Verdict) -> set[str]:
    return {c.reason for c in verdict.checks if c.status != "pass"}


def test_the_unmodified_log_is_trusted() -> None:
    assert _verdict(SB_LOG).status == "trusted"


SEPARATOR_PCR7 = 9  # event index of the PCR7 separator in this log
FIRST_SEPARATOR_PCR0 = 15


@pytest.mark.parametrize(
    ("name", "action", "reason"),
    [
        ("debug-mode", b"UEFI Debug Mode", "uefi_debug_mode"),
        ("dma-protection-off", b"DMA Protection Disabled", "dma_protection_disabled"),
    ],
)
def test_unsafe_platform_state_is_a_failure(name: str, action: bytes, reason: str) -> None:
    """Attack 17: debug and unsafe platform states are policy inputs, failures unless allowed."""
    data = _insert_before(SB_LOG, SEPARATOR_PCR7, _event(7, EventType.EV_EFI_ACTION, action))
    verdict = _verdict(data)
    assert verdict.status == "untrusted", name
    assert reason in _failing_reasons(verdict)


def test_duplicate_separator_is_a_failure() -> None:
    """Attack 6: a second separator in PCR0 (firmware measuring after it said it was done)."""
    sep = _event(0, EventType.EV_SEPARATOR, bytes(4))
    data = _insert_before(SB_LOG, FIRST_SEPARATOR_PCR0 + 1, sep)
    verdict = _verdict(data)
    assert verdict.status == "untrusted"
    assert _failing_reasons(verdict) == {"separator_duplicate"}


def test_boot_application_after_exit_boot_services_is_a_failure() -> None:
    """Attack 6: measurements after ExitBootServices in a PCR where that is wrong."""
    log = parse_event_log(SB_LOG)
    shim = log.events[23]
    late = struct.pack("<III", 4, shim.event_type, len(BANKS))
    for alg in BANKS:
        late += struct.pack("<H", int(alg)) + shim.digests[alg]
    late += struct.pack("<I", len(shim.data)) + shim.data
    verdict = _verdict(SB_LOG + late)
    assert verdict.status == "untrusted"
    assert _failing_reasons(verdict) == {"event_after_exit_boot_services"}


def test_missing_scrtm_and_firmware_blobs_is_never_trusted() -> None:
    """Attack 8: firmware that never measured itself — no S-CRTM version, no firmware blobs."""
    data = SB_LOG
    for index in (3, 2, 1):  # the two firmware blobs and the S-CRTM version, back to front
        data = _remove(data, index)
    verdict = _verdict(data)
    assert verdict.status == "untrusted"
    # The golden set pins both, so their absence is named too (attack 19).
    assert _failing_reasons(verdict) == {
        "firmware_events_missing",
        "firmware_blob_missing",
        "scrtm_version_missing",
    }


def test_missing_pcr7_separator_is_never_trusted() -> None:
    """Attack 7: policy requires what it relies on: the end of the Secure Boot configuration."""
    verdict = _verdict(_remove(SB_LOG, SEPARATOR_PCR7))
    assert verdict.status != "trusted"
    assert "separator_missing" in _failing_reasons(verdict)


def test_action_string_not_covered_by_its_digest_is_not_trusted() -> None:
    """Attack 5: the event says one thing, the digest was of another."""
    log = parse_event_log(SB_LOG)
    calling = log.events[14]
    assert calling.data == b"Calling EFI Application from Boot Option"
    forged = struct.pack("<III", 4, calling.event_type, len(BANKS))
    for alg in BANKS:
        forged += struct.pack("<H", int(alg)) + alg.hash(b"something else entirely")
    forged += struct.pack("<I", len(calling.data)) + calling.data
    end = log.events[15].offset
    data = SB_LOG[: calling.offset] + forged + SB_LOG[end:]
    verdict = _verdict(data)
    assert verdict.status == "untrusted"
    # ... and the digest that was really extended is accounted for by nothing (closed world).
    assert _failing_reasons(verdict) == {"event_data_not_covered", "event_not_accounted"}


def test_kernel_command_line_not_covered_by_its_digest_is_not_trusted() -> None:
    """Attack 5 on PCR8: the logged text is the approved command line, the digest is of another."""
    log = parse_event_log(SB_LOG)
    cmdline = log.events[45]
    assert cmdline.data.startswith(b"kernel_cmdline: ")
    forged = struct.pack("<III", 8, cmdline.event_type, len(BANKS))
    for alg in BANKS:
        forged += struct.pack("<H", int(alg)) + alg.hash(b"/vmlinuz init=/bin/sh")
    forged += struct.pack("<I", len(cmdline.data)) + cmdline.data
    data = SB_LOG[: cmdline.offset] + forged + SB_LOG[log.events[46].offset :]
    verdict = _verdict(data)
    assert verdict.status == "untrusted"
    assert _failing_reasons(verdict) == {"cmdline_not_covered"}


@pytest.mark.parametrize("name", ["Boot0009", "KEK", "SecureBoot", "SbatLevel"])
def test_a_boot_variable_hashed_over_its_value_cannot_pass_for_another_variable(name: str) -> None:
    """Attack 5 on a variable's name: edk2 hashes a Boot#### variable's VariableData only, so the
    name and GUID before it are the log's word. A node adds a boot variable holding a copy of its
    KEK (or SecureBoot's 01, or the SbatLevel text) — the firmware measures it into PCR1 — and
    the log names it after the variable that holds that value: it must stay a digest nothing
    approves, never be taken for the Secure Boot variable whose value it copies."""
    log = parse_event_log(SB_LOG)
    real = {variable_name(e.data): e.data for e in log.events if e.pcr == 7}
    copied = real["KEK" if name == "Boot0009" else name]
    value = variable_value(copied)
    data = variable_data(name, value, guid=copied[:16])
    record = struct.pack("<III", 1, EventType.EV_EFI_VARIABLE_BOOT, len(BANKS))
    for alg in BANKS:
        record += struct.pack("<H", int(alg)) + alg.hash(value)  # as edk2: over VariableData
    record += struct.pack("<I", len(data)) + data
    first_boot_variable = next(
        i for i, e in enumerate(log.events) if e.event_type == EventType.EV_EFI_VARIABLE_BOOT
    )
    verdict = _verdict(_insert_before(SB_LOG, first_boot_variable, record))
    assert verdict.status == "untrusted"
    assert _failing_reasons(verdict) == {"event_not_accounted"}
    (check,) = [c for c in verdict.checks if c.reason == "event_not_accounted"]
    assert (check.pcr, check.got) == (1, HashAlg.SHA256.hash(value).hex())
