"""The boot policy's kernel_lsm rule: the measured kernel command line must keep SELinux on and
enforcing and name only approved LSMs — read from text a digest covers (GRUB's kernel_cmdline, or
LoadOptions whose digest is an approved command line), never from uncovered data."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.corim import export_corim, import_corim
from golden.model import CmdlineRule, GoldenSet, KernelLsm
from golden.yamlfmt import dump_yaml, load_yaml
from tests.adversarial import forge
from tests.adversarial.forge import SB_LOG
from verifier.appraisal import Verdict, appraise, compile_golden

from .conftest import CORPUS
from .test_load_options import _with_load_options

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
CMDLINE_EVENT = 45  # kernel_cmdline: /vmlinuz console=ttyS0,115200 panic=-1 loglevel=4
DIRECT = CORPUS / "qemu-ovmf-debian12" / "direct-kernel-boot.bin"
UKI = CORPUS / "qemu-ovmf-debian12" / "uki-systemd-stub.bin"


def _golden(data: bytes, **change: object) -> GoldenSet:
    g = capture(
        assume_quoted_for_review(parse_event_log(data), HashAlg.SHA256), name="s", version="1"
    )
    return dataclasses.replace(g, kernel_lsm=KernelLsm(), **change)  # type: ignore[arg-type]


def _appraise(data: bytes, golden: GoldenSet) -> Verdict:
    vlog = assume_quoted_for_review(parse_event_log(data), HashAlg.SHA256)
    return appraise(vlog, compile_golden([golden], now=NOW))


def _lsm(verdict: Verdict) -> list[tuple[str, str]]:
    return [(c.status, c.reason) for c in verdict.checks if c.id == "boot.cmdline.lsm"]


def _with_cmdline(text: str) -> bytes:
    """The Debian log with GRUB's kernel_cmdline event measuring ``text`` (covered, as GRUB does)."""
    e = forge.events(SB_LOG)[CMDLINE_EVENT]
    data = b"kernel_cmdline: " + text.encode() + b"\x00"
    new = forge.record(e.pcr, e.event_type, data, measured=text.encode())
    return forge.replace(SB_LOG, CMDLINE_EVENT, new)


def test_the_debian_command_line_keeps_selinux_and_passes() -> None:
    verdict = _appraise(SB_LOG, _golden(SB_LOG))
    assert verdict.status == "trusted", verdict.reason
    assert _lsm(verdict) == [("pass", "cmdline_lsm_ok")]


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("selinux=0", "cmdline_selinux_disabled"),
        ("enforcing=0", "cmdline_selinux_permissive"),
        ("security=apparmor", "cmdline_selinux_disabled"),
        ('lsm="capability,apparmor"', "cmdline_selinux_disabled"),
    ],
)
def test_a_command_line_that_switches_selinux_off_is_untrusted(extra: str, reason: str) -> None:
    # Even with a rule that allows any command line, the LSM rule still judges the covered text.
    golden = _golden(SB_LOG, cmdlines=(CmdlineRule(regex=".*"),))
    verdict = _appraise(_with_cmdline(f"/vmlinuz console=ttyS0,115200 {extra}"), golden)
    assert verdict.status == "untrusted"
    assert ("fail", reason) in _lsm(verdict)
    assert {c.reason for c in verdict.checks if c.status == "fail"} <= {
        reason,
        "cmdline_lsm_not_approved",
    }


def test_an_lsm_pass_never_accounts_for_a_command_line_nothing_approves() -> None:
    """The LSM rule judges a few options only: the rest of the line stays unapproved."""
    verdict = _appraise(_with_cmdline("/vmlinuz init=/bin/sh"), _golden(SB_LOG))
    assert verdict.status == "untrusted"
    assert ("pass", "cmdline_lsm_ok") in _lsm(verdict)
    assert "cmdline_not_approved" in {c.reason for c in verdict.checks if c.status == "fail"}


def test_load_options_of_an_approved_command_line_are_read_as_that_text() -> None:
    data = DIRECT.read_bytes()
    text = "console=ttyS0,115200 panic=-1 loglevel=4"
    good = _golden(data, cmdlines=(CmdlineRule(exact=text),))
    assert _lsm(_appraise(data, good)) == [("pass", "cmdline_lsm_ok")]
    # An approved command line that disables SELinux, carried by OVMF's LoadOptions: the digest
    # matches the approved text, and that text is what the LSM rule reads.
    evil = f"{text} selinux=0"
    forged = _with_load_options(data, (evil + " initrd=initrd\x00").encode("utf-16-le"))
    verdict = _appraise(forged, _golden(data, cmdlines=(CmdlineRule(exact=evil),)))
    assert ("pass", "ok") in [(c.status, c.reason) for c in verdict.checks if c.pcr == 9]
    assert ("fail", "cmdline_selinux_disabled") in _lsm(verdict)


def test_a_command_line_known_only_by_digest_cannot_be_checked() -> None:
    data = UKI.read_bytes()
    golden = _golden(data)  # capture pinned the UKI's LoadOptions by digest: no text anywhere
    assert golden.cmdlines and golden.cmdlines[0].load_options
    verdict = _appraise(data, golden)
    assert verdict.status == "untrusted"
    assert _lsm(verdict) == [("fail", "cmdline_lsm_unverifiable")]


def test_kernel_lsm_round_trips_and_relies_on_pcr8() -> None:
    g = dataclasses.replace(
        GoldenSet(name="lsm", version="1"),
        kernel_lsm=KernelLsm(require_selinux=False, approved=("lockdown", "yama")),
    )
    assert load_yaml(dump_yaml(g)) == g
    assert import_corim(export_corim(g)).kernel_lsm == g.kernel_lsm
    assert 8 in g.relied_pcrs()
