"""Firmware workarounds: one table, each use its own check in the verdict, deniable per golden set.

Run on the real logs that need them (issue 10 §2) and on synthetic ExitBootServices variants.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from assay.algorithms import HashAlg
from assay.eventlog import (
    WORKAROUNDS,
    BootLog,
    EventLog,
    assume_quoted_for_review,
    parse_event_log,
    replay,
    verify_log,
)
from assay.tpm2 import VerifiedQuote
from golden.capture import capture
from golden.corim import export_corim, import_corim
from golden.model import GoldenSet
from golden.yamlfmt import GoldenFormatError, dump_yaml, load_yaml
from testkit.quotes import quote_of
from verifier.appraisal import Verdict, appraise, compile_golden

from ..conftest import CORPUS
from .forge import SB_LOG, remove

NOW = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
SHIM_SHORT = "shim-authority-one-byte-short"
DATA_ONLY = "variable-digest-over-data-only"
REAL = [
    ("go-tpm-tools/debian-10.bin", HashAlg.SHA1, SHIM_SHORT, 1),
    ("go-tpm-tools/cos-85-amd-sev.bin", HashAlg.SHA256, SHIM_SHORT, 2),
    ("go-tpm-tools/cos-93-amd-sev.bin", HashAlg.SHA256, SHIM_SHORT, 2),
    (
        "python3-uefi-eventlog/bootlog-5.0.0-rhel-20210423T133156Z_8b0347a.bin",
        HashAlg.SHA256,
        SHIM_SHORT,
        2,
    ),
    ("go-attestation/linux_tpm12.eventlog.bin", HashAlg.SHA1, DATA_ONLY, 5),
]


def _appraise(vlog: BootLog, golden: GoldenSet) -> Verdict:
    return appraise(vlog, compile_golden([golden], now=NOW))


def _uses(verdict: Verdict, name: str) -> list[tuple[int | None, int | None, str]]:
    return [(c.pcr, c.event, c.reason) for c in verdict.checks if c.id == f"workaround.{name}"]


def test_the_table_names_every_workaround_with_a_reference_and_what_it_touches() -> None:
    assert set(WORKAROUNDS) == {
        SHIM_SHORT,
        DATA_ONLY,
        "exit-boot-services-events-missing",
        "exit-boot-services-failure-missing",
        "exit-boot-services-retry-missing",
    }
    for w in WORKAROUNDS.values():
        assert w.reference and w.summary and w.event_types and w.pcrs
        assert (w.covered_part is None) != (not w.unlogged)


@pytest.mark.parametrize(("name", "bank", "workaround", "count"), REAL, ids=[r[0] for r in REAL])
def test_a_real_log_that_needs_a_workaround_reports_each_use(
    name: str, bank: HashAlg, workaround: str, count: int
) -> None:
    vlog = assume_quoted_for_review(parse_event_log((CORPUS / name).read_bytes()), bank)
    golden = capture(vlog, name="self", version="1")
    verdict = _appraise(vlog, golden)
    assert verdict.status == "trusted", verdict.reason
    uses = _uses(verdict, workaround)
    assert len(uses) == count
    assert all(
        pcr == 7 and event is not None and reason == "workaround_applied"
        for pcr, event, reason in uses
    )
    denied = _appraise(vlog, dataclasses.replace(golden, deny_workarounds=(workaround,)))
    assert denied.status == "untrusted"
    assert {c.reason for c in denied.checks if c.status == "fail"} == {"workaround_denied"}
    assert all("self@1" in c.message for c in denied.checks if c.status == "fail")


def _ebs_missing() -> tuple[EventLog, VerifiedQuote]:
    path = CORPUS / "go-attestation" / "ebs_event_missing_eventlog"
    expected = json.loads(path.with_name(path.name + ".expected_pcrs.json").read_text())
    log = parse_event_log(path.read_bytes())
    pcrs = dict(replay(log, (HashAlg.SHA1,)).pcrs[HashAlg.SHA1])
    pcrs[5] = bytes.fromhex(expected["pcrs"]["sha1"]["5"])
    return log, quote_of({HashAlg.SHA1: pcrs})


def test_unlogged_exit_boot_services_events_are_added_and_reported() -> None:
    log, quote = _ebs_missing()
    vlog = verify_log(log, quote, HashAlg.SHA1)
    (used,) = vlog.workarounds
    n = len(log.events)
    assert used.workaround.name == "exit-boot-services-events-missing"
    assert (used.pcr, used.events) == (5, (n, n + 1))
    assert [e.data for e in vlog.events[-2:]] == [
        b"Exit Boot Services Invocation",
        b"Exit Boot Services Returned with Success",
    ]
    golden = dataclasses.replace(
        capture(vlog, name="m60", version="1"), require_exit_boot_services=True
    )
    verdict = _appraise(vlog, golden)
    assert verdict.status == "trusted", verdict.reason
    assert _uses(verdict, "exit-boot-services-events-missing") == [(5, n, "workaround_applied")]
    denied = dataclasses.replace(golden, deny_workarounds=("exit-boot-services-events-missing",))
    assert _appraise(vlog, denied).status == "untrusted"


@pytest.mark.parametrize(
    ("name", "actions"),
    [
        (
            "exit-boot-services-failure-missing",
            (b"Exit Boot Services Invocation", b"Exit Boot Services Returned with Failure"),
        ),
        (
            "exit-boot-services-retry-missing",
            (
                b"Exit Boot Services Invocation",
                b"Exit Boot Services Returned with Failure",
                b"Exit Boot Services Invocation",
                b"Exit Boot Services Returned with Success",
            ),
        ),
    ],
)
def test_the_two_further_exit_boot_services_variants(name: str, actions: tuple[bytes, ...]) -> None:
    """Debian's log with its two PCR5 ExitBootServices events taken out of the log but extended."""
    data = remove(remove(SB_LOG, 49), 48)
    log = parse_event_log(data)
    pcrs = dict(replay(log, (HashAlg.SHA256,)).pcrs[HashAlg.SHA256])
    h = HashAlg.SHA256
    for action in actions:
        pcrs[5] = h.hasher(pcrs[5] + h.hash(action)).digest()
    vlog = verify_log(log, quote_of({h: pcrs}), h)
    assert [w.workaround.name for w in vlog.workarounds] == [name]
    golden = capture(assume_quoted_for_review(parse_event_log(SB_LOG), h), name="sb", version="1")
    verdict = _appraise(vlog, golden)
    assert verdict.status == "trusted", verdict.reason
    assert _uses(verdict, name)[0][:2] == (5, len(log.events))


def test_a_workaround_that_does_not_explain_the_quote_is_not_applied() -> None:
    log, quote = _ebs_missing()
    wrong = quote_of({HashAlg.SHA1: {**quote.pcrs[HashAlg.SHA1], 5: bytes(20)}})
    with pytest.raises(Exception, match="PCR5"):
        verify_log(log, wrong, HashAlg.SHA1)


def test_deny_workarounds_and_measurements_survive_yaml_and_corim() -> None:
    vlog = assume_quoted_for_review(parse_event_log(SB_LOG), HashAlg.SHA256)
    golden = dataclasses.replace(
        capture(vlog, name="sb", version="1"), deny_workarounds=(SHIM_SHORT, DATA_ONLY)
    )
    assert golden.measurements, "capture approves the uncategorised events by digest"
    assert load_yaml(dump_yaml(golden)) == golden
    assert import_corim(export_corim(golden)) == golden


def test_an_unknown_workaround_name_is_a_golden_format_error() -> None:
    with pytest.raises(GoldenFormatError, match="unknown workaround 'no-such-bug'"):
        load_yaml("name: x\nversion: '1'\ndeny_workarounds: [no-such-bug]\n")


def test_eventlog_show_and_replay_report_the_workaround(capsys: pytest.CaptureFixture[str]) -> None:
    from verifier._cli import main as verifier_main

    path = str(CORPUS / "go-tpm-tools" / "cos-85-amd-sev.bin")
    assert verifier_main(["eventlog", "replay", "--json", path]) == 0
    replayed = json.loads(capsys.readouterr().out)["workarounds"]
    assert [(w["name"], w["pcr"], w["events"]) for w in replayed] == [
        (SHIM_SHORT, 7, [24]),
        (SHIM_SHORT, 7, [42]),
    ]
    assert verifier_main(["eventlog", "show", "--json", path]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["workarounds"] == replayed
    assert [e["index"] for e in shown["events"] if e["workaround"] == SHIM_SHORT] == [24, 42]
    assert verifier_main(["eventlog", "show", path]) == 0
    table = capsys.readouterr().out
    assert f"[workaround {SHIM_SHORT}]" in table
    assert f"workaround {SHIM_SHORT}: PCR7 event 24" in table
