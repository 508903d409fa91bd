"""A node that booted a component of a revoked golden version says so: ``golden_revoked``, naming the
set, its version and the revocation's reason — for a boot application and for any other component
known by digest (here an initrd), not merely "matches nothing approved"."""

from __future__ import annotations

import dataclasses
import datetime as dt

from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.model import GoldenSet
from verifier.appraisal import Verdict, appraise, compile_golden

from .conftest import CORPUS

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
VLOG = assume_quoted_for_review(
    parse_event_log(
        (CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin").read_bytes()
    ),
    HashAlg.SHA256,
)
FULL = capture(VLOG, name="fleet", version="1")


def _appraise(*sets: GoldenSet) -> Verdict:
    return appraise(VLOG, compile_golden(sets, now=NOW))


def test_an_initrd_only_a_revoked_version_approves_is_golden_revoked_with_the_reason() -> None:
    assert FULL.initrds
    platform = dataclasses.replace(FULL, initrds=())
    initrd = GoldenSet(name="initrd", version="2", initrds=FULL.initrds)
    assert _appraise(platform, initrd).status == "trusted"
    verdict = _appraise(platform, initrd.with_status("revoked", "CVE-2026-0001: bad initramfs"))
    assert verdict.status == "untrusted"
    [failed] = [c for c in verdict.checks if c.status == "fail"]
    assert (failed.reason, failed.pcr, failed.golden) == ("golden_revoked", 9, "initrd@2")
    assert "CVE-2026-0001: bad initramfs" in failed.message


def test_a_retired_version_is_not_called_revoked() -> None:
    platform = dataclasses.replace(FULL, initrds=())
    initrd = GoldenSet(name="initrd", version="2", initrds=FULL.initrds)
    verdict = _appraise(platform, initrd.with_status("retired"))
    assert verdict.status == "untrusted"
    assert [c.reason for c in verdict.checks if c.status == "fail"] == ["event_not_accounted"]
