"""MISSION.md attacks at the appraisal layer that the other adversarial files do not already name.

The full map from each of the 21 attacks to its tests is tests/adversarial/README.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct

import pytest

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence
from assay.eventlog import assume_quoted_for_review, parse_event_log, replay, verify_log
from assay.events import EventType as T
from golden.capture import capture
from testkit.quotes import quote_of
from verifier.appraisal import appraise, compile_golden

from .forge import SB_LOG, record, replace, variable

NOW = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
GOLDEN = capture(
    assume_quoted_for_review(parse_event_log(SB_LOG), HashAlg.SHA256), name="sb", version="1"
)


def _reasons(verdict: object) -> set[str]:
    return {c.reason for c in verdict.checks if c.status != "pass"}  # type: ignore[attr-defined]


def test_attack_1_7_a_relied_on_pcr_the_quote_leaves_out_is_unknown_never_trusted() -> None:
    """The quote covers PCR0–7 only: PCR8/9/14 events are dropped, and the policy relies on them."""
    log = parse_event_log(SB_LOG)
    values = replay(log, (HashAlg.SHA256,)).pcrs[HashAlg.SHA256]
    quote = quote_of({HashAlg.SHA256: {p: v for p, v in values.items() if p <= 7}})
    vlog = verify_log(log, quote, HashAlg.SHA256)
    assert {e.pcr for e in vlog.events} <= set(range(8))
    golden = dataclasses.replace(GOLDEN, required_pcrs=tuple(range(8)))
    verdict = appraise(vlog, compile_golden([golden], now=NOW))
    assert verdict.status == "untrusted"  # the pinned command line, initrd, MokLists are absent
    assert {(c.id, c.reason) for c in verdict.checks if c.status == "unknown"} == {
        ("pcr8.quoted", "pcr_not_quoted"),
        ("pcr9.quoted", "pcr_not_quoted"),
        ("pcr14.quoted", "pcr_not_quoted"),
    }
    assert {"cmdline_not_measured", "initrd_not_measured", "moklist_missing"} <= _reasons(verdict)


def test_attack_7_an_empty_log_is_malformed_not_a_pass() -> None:
    with pytest.raises(MalformedEvidence):
        parse_event_log(b"")


def _siglist_with_bad_size() -> bytes:
    """An EFI_SIGNATURE_LIST whose SignatureSize does not divide its body (attack 14)."""
    guid = bytes.fromhex("2616c4c14c509240aca941f936934328")
    return guid + struct.pack("<III", 28 + 47, 0, 48) + b"\x00" * 47


def test_attack_14_a_malformed_signature_list_in_a_covered_pk_is_never_trusted() -> None:
    evil = record(7, T.EV_EFI_VARIABLE_DRIVER_CONFIG, variable("PK", _siglist_with_bad_size()))
    verdict = appraise(
        assume_quoted_for_review(parse_event_log(replace(SB_LOG, 5, evil)), HashAlg.SHA256),
        compile_golden([GOLDEN], now=NOW),
    )
    assert verdict.status == "untrusted"
    assert "secure_boot_variable_unverifiable" in _reasons(verdict)


@pytest.mark.parametrize("sets", ["none", "retired"])
def test_attack_12_15_a_log_that_matches_its_quote_is_not_a_good_boot_by_itself(sets: str) -> None:
    """No golden set in force: the replay matching the quote proves nothing about the boot."""
    golden = [] if sets == "none" else [GOLDEN.with_status("retired")]
    vlog = assume_quoted_for_review(parse_event_log(SB_LOG), HashAlg.SHA256)
    verdict = appraise(vlog, compile_golden(golden, now=NOW))
    assert verdict.status != "trusted"
    assert "no_golden_set_in_force" in _reasons(verdict)
    # Nothing in force approves anything; a retired set's apps are named as retired.
    assert ("boot_app_retired" if sets == "retired" else "boot_app_not_approved") in _reasons(
        verdict
    )


def test_attack_12_an_expired_set_approves_nothing_at_appraisal_time() -> None:
    expired = dataclasses.replace(GOLDEN, valid_until=NOW - dt.timedelta(seconds=1))
    vlog = assume_quoted_for_review(parse_event_log(SB_LOG), HashAlg.SHA256)
    verdict = appraise(vlog, compile_golden([expired], now=NOW))
    assert verdict.status != "trusted"
    assert "no_golden_set_in_force" in _reasons(verdict)
