"""Every real log in the corpus parses; those with expected PCR values replay to exactly those values."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence
from assay.eventlog import (
    TRAILER_PCR,
    initial_value,
    parse_event_log,
    replay,
    verify_log,
)
from testkit.quotes import quote_of

from .conftest import CORPUS, load_manifest

MANIFEST = load_manifest()
LOG_ROWS = [r for r in MANIFEST if r["category"] in ("real", "edge", "crafted-snippet")]
MALFORMED_ROWS = [r for r in MANIFEST if r["category"] == "malformed"]

# PCRs the source says were extended outside the event log (IMA in PCR10), and PCR17-22, which a TPM
# resets to all ones until a DRTM launch; neither can replay from the log.
OUTSIDE_LOG = {10, 17, 18, 19, 20, 21, 22}


def _log_for(expected: Path) -> Path:
    base = str(expected)[: -len(".expected_pcrs.json")]
    for candidate in (base, base + ".bin", base + ".eventlog.bin", base + "_eventlog"):
        if Path(candidate).is_file():
            return Path(candidate)
    raise AssertionError(f"no log beside {expected}")


EXPECTED = sorted(CORPUS.glob("*/*.expected_pcrs.json"))


@pytest.mark.parametrize("row", LOG_ROWS, ids=[r["file"] for r in LOG_ROWS])
def test_real_log_parses_with_manifest_event_count(row: dict[str, str]) -> None:
    raw = (CORPUS / row["file"]).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == row["sha256"]  # the manifest's file
    log = parse_event_log(raw)
    if row["n_events"]:
        assert len(log.events) == int(row["n_events"])
    assert log.size == len(raw)
    declared = {b.bank for b in log.banks}
    assert declared == set(row["banks"].split("+"))


def test_expected_value_files_found() -> None:
    assert len(EXPECTED) >= 18


@pytest.mark.parametrize("expected", EXPECTED, ids=[p.parent.name + "/" + p.name for p in EXPECTED])
def test_replay_equals_expected_pcrs(expected: Path) -> None:
    log = parse_event_log(_log_for(expected).read_bytes())
    want = json.loads(expected.read_text())["pcrs"]
    result = replay(log)
    compared = 0
    for alg in log.banks:
        bank_want = want.get(alg.bank)
        if not bank_want:
            continue
        got = result.pcrs[alg]
        quoted: dict[int, bytes] = {}
        for pcr_s, value_hex in bank_want.items():
            pcr, value = int(pcr_s), bytes.fromhex(value_hex)
            if pcr in got:
                quoted[pcr] = value
            elif pcr not in OUTSIDE_LOG:
                assert value == initial_value(alg, pcr, result.start_locality), (
                    f"{alg.bank} PCR{pcr}"
                )
        # The quote-style check: replay must equal every expected value the log has events for.
        verified = verify_log(log, quote_of({alg: quoted}), alg)
        compared += len(quoted)
        for pcr, value in quoted.items():
            if not verified.workarounds:
                assert got[pcr] == value, f"{alg.bank} PCR{pcr}"
    assert compared > 0


def test_ebs_missing_log_needs_the_named_workaround() -> None:
    path = CORPUS / "go-attestation/ebs_event_missing_eventlog"
    log = parse_event_log(path.read_bytes())
    want = json.loads(path.with_name(path.name + ".expected_pcrs.json").read_text())["pcrs"]
    pcr5 = bytes.fromhex(want["sha1"]["5"])
    assert replay(log).pcrs[HashAlg.SHA1][5] != pcr5
    verified = verify_log(log, quote_of({HashAlg.SHA1: {5: pcr5}}), HashAlg.SHA1)
    assert [w.workaround.name for w in verified.workarounds] == [
        "exit-boot-services-events-missing"
    ]


@pytest.mark.parametrize("row", MALFORMED_ROWS, ids=[r["file"] for r in MALFORMED_ROWS])
def test_malformed_corpus_log_is_rejected_cleanly(row: dict[str, str]) -> None:
    with pytest.raises(MalformedEvidence) as info:
        parse_event_log((CORPUS / row["file"]).read_bytes())
    assert str(info.value)


def test_malformed_messages_name_what_was_wrong() -> None:
    cases = {
        "keylime/binary_bios_measurements-empty": "event log is empty",
        "keylime/binary_bios_measurements-bogus": "event 0, offset 0: PCR index 1969712994 out of range",
        "tpm2-tools/specid-vendordata.bin": "Spec ID event size 37 != computed 41",
    }
    for name, message in cases.items():
        with pytest.raises(MalformedEvidence, match=message.replace("(", r"\(")):
            parse_event_log((CORPUS / name).read_bytes())


def test_startup_locality_sets_pcr0_start() -> None:
    log = parse_event_log((CORPUS / "keylime/binary_bios_measurements").read_bytes())
    assert log.startup_locality == 3
    result = replay(log)
    assert result.start_locality == 3
    # The same log replayed from zero gives another PCR0: the locality really is applied.
    from assay.eventlog._replay import _replay_bank

    events = [e for e in log.events if e.event_type != 3]
    assert _replay_bank(events, HashAlg.SHA256, 0)[0][0] != result.pcrs[HashAlg.SHA256][0]


def test_short_no_action_edge_log_parses_as_sha1_with_locality_3() -> None:
    log = parse_event_log((CORPUS / "go-attestation/short_no_action_eventlog").read_bytes())
    assert log.format == "sha1"
    assert log.startup_locality == 3
    assert len(log.events) == 1
    assert replay(log).pcrs[HashAlg.SHA1] == {}


def test_windows_trailer_is_parsed_not_replayed() -> None:
    log = parse_event_log((CORPUS / "python3-uefi-eventlog/p511.bin").read_bytes())
    trailer = [e for e in log.events if e.pcr == TRAILER_PCR]
    assert len(trailer) == 1 and trailer[0].event_type == 3
    assert TRAILER_PCR not in replay(log).pcrs[HashAlg.SHA256]


def test_events_with_fewer_digests_than_declared_are_kept() -> None:
    log = parse_event_log((CORPUS / "python3-uefi-eventlog/p511.bin").read_bytes())
    counts = {len(e.digests) for e in log.events}
    assert counts == {1, 2}
    short = [e for e in log.events if len(e.digests) == 1]
    assert len(short) >= 16


def test_event_with_two_of_four_declared_digests() -> None:
    log = parse_event_log((CORPUS / "tpm2-tools/event-uefiaction.bin").read_bytes())
    assert len(log.banks) == 4
    assert len(log.events[1].digests) == 2
    result = replay(log)
    # Banks the event has no digest for cannot be replayed for its PCR: left out, with a warning.
    missing = [alg for alg in log.banks if alg not in log.events[1].digests]
    for alg in missing:
        assert log.events[1].pcr in result.incomplete[alg]
        assert log.events[1].pcr not in result.pcrs[alg]
    assert result.warnings


def test_sha1_log_on_tpm2_has_only_sha1_bank() -> None:
    log = parse_event_log((CORPUS / "go-tpm-tools/debian-10.bin").read_bytes())
    assert log.format == "sha1" and log.banks == (HashAlg.SHA1,)
