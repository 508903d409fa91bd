"""The kernel command line known only by its LoadOptions digest (PCR9, the Linux EFI stub).

Under direct kernel boot and with a UKI no loader logs the command line as text; the stub measures
the LoadOptions it was given as an EV_EVENT_TAG "LOADED_IMAGE::LoadOptions" whose data is only that
description. The three corpus logs that carry it establish how each loader encodes a command line
(``assay.bootfacts.load_options_forms``); here a changed command line must fail
``cmdline_not_approved``, and a set captured from such a log must pin the one it saw.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct

import pytest

from assay.algorithms import HashAlg
from assay.bootfacts import extract
from assay.eventlog import EventLog, assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.corim import export_corim, import_corim
from golden.model import CmdlineRule, GoldenSet
from golden.yamlfmt import dump_yaml, load_yaml
from verifier.appraisal import Verdict, appraise, compile_golden

from .conftest import CORPUS

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
DEBIAN = "console=ttyS0,115200 panic=-1 loglevel=4"
UBUNTU = (
    "/vmlinuz-6.8.0-1010-gcp root=PARTUUID=8270f3c9-b4e4-4345-80ee-5a62db7ebf3f ro "
    "console=ttyS0,115200 panic=-1"
)
# (log, the command line its loader passed, how the loader encoded it)
LOGS = {
    "direct": (
        "qemu-ovmf-debian12/direct-kernel-boot.bin",
        DEBIAN,
        "OVMF: text, ' initrd=initrd', NUL",
    ),
    "uki": ("qemu-ovmf-debian12/uki-systemd-stub.bin", DEBIAN, "systemd-stub: text, NUL"),
    "grub": ("go-tpm-tools/ubuntu-2404-amd-sevsnp.bin", UBUNTU, "GRUB 2.12: 'BOOT_IMAGE=' + text"),
}


def _log(name: str) -> bytes:
    return (CORPUS / LOGS[name][0]).read_bytes()


def _appraise(data: bytes, golden: GoldenSet) -> Verdict:
    vlog = assume_quoted_for_review(parse_event_log(data), HashAlg.SHA256)
    return appraise(vlog, compile_golden([golden], now=NOW))


def _cmdline_checks(verdict: Verdict) -> list[tuple[str, str, int | None]]:
    return [(c.status, c.reason, c.pcr) for c in verdict.checks if c.id == "kernel.cmdline"]


def _with_load_options(data: bytes, cmdline_bytes: bytes) -> bytes:
    """The log with its LoadOptions event measuring ``cmdline_bytes`` instead (every bank)."""
    log = parse_event_log(data)
    e = next(e for e in log.events if e.pcr == 9 and b"LoadOptions" in e.data)
    end = log.events[e.index + 1].offset if e.index + 1 < len(log.events) else len(data)
    return data[: e.offset] + _record(log, e.pcr, e.event_type, e.data, cmdline_bytes) + data[end:]


def _record(log: EventLog, pcr: int, etype: int, data: bytes, measured: bytes) -> bytes:
    out = struct.pack("<III", pcr, etype, len(log.banks))
    for alg in log.banks:
        out += struct.pack("<H", int(alg)) + alg.hash(measured)
    return out + struct.pack("<I", len(data)) + data


@pytest.mark.parametrize("name", LOGS)
def test_an_exact_command_line_approves_the_load_options_its_loader_passed(name: str) -> None:
    data = _log(name)
    golden = dataclasses.replace(
        capture(
            assume_quoted_for_review(parse_event_log(data), HashAlg.SHA256), name="s", version="1"
        ),
        cmdlines=(CmdlineRule(exact=LOGS[name][1]),),
    )
    verdict = _appraise(data, golden)
    assert verdict.status == "trusted", verdict.reason
    assert ("pass", "ok", 9) in _cmdline_checks(verdict)


@pytest.mark.parametrize("name", LOGS)
def test_a_changed_command_line_is_cmdline_not_approved(name: str) -> None:
    data = _log(name)
    golden = capture(
        assume_quoted_for_review(parse_event_log(data), HashAlg.SHA256), name="s", version="1"
    )
    assert _appraise(data, golden).status == "trusted"
    evil = (LOGS[name][1] + " init=/bin/sh").encode("utf-16-le") + b"\x00\x00"
    verdict = _appraise(_with_load_options(data, evil), golden)
    assert verdict.status == "untrusted"
    assert ("fail", "cmdline_not_approved", 9) in _cmdline_checks(verdict)


@pytest.mark.parametrize("name", ["direct", "uki"])
def test_capture_pins_the_load_options_when_no_text_was_logged(name: str) -> None:
    vlog = assume_quoted_for_review(parse_event_log(_log(name)), HashAlg.SHA256)
    assert not extract(vlog).cmdlines and len(extract(vlog).load_options) == 1
    golden = capture(vlog, name="s", version="1")
    assert [bool(c.load_options) for c in golden.cmdlines] == [True]
    assert 9 in golden.relied_pcrs()
    assert load_yaml(dump_yaml(golden)) == golden
    assert import_corim(export_corim(golden)).cmdlines == golden.cmdlines


def test_grub_text_explains_its_load_options_so_capture_pins_the_text_alone() -> None:
    golden = capture(
        assume_quoted_for_review(parse_event_log(_log("grub")), HashAlg.SHA256),
        name="s",
        version="1",
    )
    assert golden.cmdlines == (CmdlineRule(exact=UBUNTU),)


def test_a_regex_rule_cannot_vouch_for_a_digest_without_text() -> None:
    data = _log("direct")
    golden = dataclasses.replace(
        capture(
            assume_quoted_for_review(parse_event_log(data), HashAlg.SHA256), name="s", version="1"
        ),
        cmdlines=(CmdlineRule(regex=".*"),),
    )
    verdict = _appraise(data, golden)
    assert verdict.status == "untrusted"
    assert ("fail", "cmdline_not_approved", 9) in _cmdline_checks(verdict)


def test_a_regex_rule_vouches_for_the_load_options_of_the_text_grub_logged() -> None:
    data = _log("grub")
    golden = dataclasses.replace(
        capture(
            assume_quoted_for_review(parse_event_log(data), HashAlg.SHA256), name="s", version="1"
        ),
        cmdlines=(CmdlineRule(regex=r"/vmlinuz-\S+ root=PARTUUID=[0-9a-f-]+ ro .*"),),
    )
    verdict = _appraise(data, golden)
    assert verdict.status == "trusted", verdict.reason
    assert [s for s, _, _ in _cmdline_checks(verdict)] == ["pass", "pass"]
