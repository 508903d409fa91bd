"""Capture and the appraisal agree on what a set must approve by digest.

``golden.capture`` imports nothing from the verifier, so it decides on its own which events its
categories (boot applications, blobs, command lines, Secure Boot variables, …) leave to
``measurements``. This checks, on every corpus log, that its answer is exactly the appraisal's: the
events the verifier's closed-world ledger would leave unaccounted for under the categorised set.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from verifier.appraisal import appraise, compile_golden, unaccounted_events

from .test_appraisal import _logs

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize("path", _logs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_capture_measures_exactly_what_the_appraisal_leaves_unaccounted(path: Path) -> None:
    log = parse_event_log(path.read_bytes())
    for bank in log.banks:
        if bank not in (HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512):
            continue
        vlog = assume_quoted_for_review(log, bank)
        golden = capture(vlog, name="c", version="1")
        categorised = dataclasses.replace(golden, measurements={})
        pcrs = frozenset(p for p in vlog.pcrs if p <= 9 or p == 14)
        left = unaccounted_events(vlog, compile_golden([categorised], now=NOW), pcrs)
        expected = {(e.pcr, e.digests[bank]) for e in left}
        got = {
            (pcr, m.digests[bank])
            for pcr, items in golden.measurements.items()
            for m in items
            if bank in m.digests
        }
        assert got == expected, f"{bank.bank}: capture {sorted(got - expected)[:3]} vs " + (
            f"appraisal {sorted(expected - got)[:3]}"
        )
        verdict = appraise(vlog, compile_golden([golden], now=NOW))
        assert not [c for c in verdict.checks if c.reason == "event_not_accounted"]
