"""Issue 10 §6: a real swtpm booted from a lying node's truth, a genuine quote, and generated lies.

For the Debian Secure Boot log (trusted against its own capture), every event of every PCR the
captured set relies on gets an evil digest in turn; that boot is extended into a fresh swtpm and
quoted; then every lie of ``generate.lies`` (each retype to every event type, uncovered data
rewritten, deletion, duplication, moves) is verified against the genuine quote and appraised. Not
one may be trusted. ``scripts/fuzz`` runs the same engine over more logs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from testkit import swtpm
from verifier.appraisal import compile_golden

from .forge import SB_LOG
from .generate import quote_truth, run, truths, verdict_of

pytestmark = pytest.mark.swtpm
NOW = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
GOLDEN = capture(
    assume_quoted_for_review(parse_event_log(SB_LOG), HashAlg.SHA256), name="sb", version="1"
)
POLICY = compile_golden([GOLDEN], now=NOW)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> swtpm.SwtpmNode:
    base = tmp_path_factory.mktemp("adversarial-factory")
    return swtpm.provision(base / "tpm", base / "ca")


def test_the_honest_boot_is_trusted_with_a_genuine_quote(
    template: swtpm.SwtpmNode, tmp_path: Path
) -> None:
    quote = quote_truth(template, tmp_path / "honest", SB_LOG)
    assert verdict_of(SB_LOG, quote, POLICY) == "trusted"


def test_no_lie_about_an_evil_boot_is_trusted(template: swtpm.SwtpmNode, tmp_path: Path) -> None:
    relied = POLICY.relied_pcrs
    assert relied >= {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14}
    trusted: list[str] = []
    count = boots = 0
    for truth in truths(SB_LOG, relied):
        quote = quote_truth(template, tmp_path / f"boot{truth.index}", truth.data)
        boots += 1
        assert verdict_of(truth.data, quote, POLICY) != "trusted", (
            f"event {truth.index} as measured"
        )
        count += run(truth, quote, POLICY, trusted.append)
    assert boots == 49 and count > 49 * 50
    assert trusted == []
