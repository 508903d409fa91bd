"""Named negative vectors for the event-log parser and for verify_log (MISSION.md attacks 1, 4, 6, 7, 13)."""

from __future__ import annotations

import struct

import pytest

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence, VerificationFailed
from assay.eventlog import MAX_LOG_SIZE, parse_event_log, replay, verify_log
from assay.tpm2 import VerifiedQuote
from testkit.quotes import quote_of

from .logbuilder import (
    EV_EFI_ACTION,
    EV_SEPARATOR,
    event2,
    sha1_event,
    simple_log,
    spec_id,
)

GOOD = simple_log()


def _quote_of(log_bytes: bytes, bank: HashAlg, pcrs: range | list[int] = range(8)) -> VerifiedQuote:
    values = replay(parse_event_log(log_bytes)).pcrs[bank]
    return quote_of({bank: {p: values[p] for p in pcrs}})


NEGATIVE_VECTORS = {
    "empty": (b"", "event log is empty"),
    "truncated-first-header": (GOOD[:20], "truncated TCG_PCR_EVENT header"),
    "spec-id-size-lies": (
        spec_id()[:28] + struct.pack("<I", 999) + spec_id()[32:],
        "overruns the log",
    ),
    "spec-id-dangling-vendor-bytes": (
        spec_id()[:28]
        + struct.pack("<I", len(spec_id()) - 32 + 4)
        + spec_id()[32:]
        + b"\xde\xad\xbe\xef",
        "Spec ID event size",
    ),
    "spec-id-zero-algorithms": (spec_id(()), "Spec ID declares 0 algorithms"),
    "spec-id-wrong-sha256-size": (
        spec_id()[:-5] + struct.pack("<HH", 0x000B, 20) + b"\x00",
        "sha256 digest size 20",
    ),
    "event-data-overruns-log": (GOOD + event2(1, EV_SEPARATOR, bytes(4))[:-2], "overruns the log"),
    "truncated-event-header": (
        GOOD + b"\x01\x00\x00\x00\x04\x00",
        "truncated TCG_PCR_EVENT2 header",
    ),
    "more-digests-than-declared": (
        GOOD + struct.pack("<III", 1, EV_SEPARATOR, 3) + bytes(80),
        "3 digests, the header declares 2",
    ),
    "undeclared-digest-algorithm": (
        GOOD + struct.pack("<IIIH", 1, EV_SEPARATOR, 1, 0x000C) + bytes(60),
        "digest algorithm 0x000c not declared",
    ),
    "duplicate-digest-algorithm": (
        GOOD
        + struct.pack("<IIIH", 1, EV_SEPARATOR, 2, 4)
        + bytes(20)
        + struct.pack("<H", 4)
        + bytes(20)
        + struct.pack("<I", 0),
        "two digests for algorithm 0x0004",
    ),
    "pcr-index-out-of-range": (
        GOOD + event2(24, EV_SEPARATOR, bytes(4)),
        "PCR index 24 out of range",
    ),
    "huge-event-size-sha1-log": (
        struct.pack("<II20sI", 0, 8, bytes(20), 0xFFFFFFF0) + b"x",
        "event data size 4294967280 overruns",
    ),
    "bad-startup-locality": (
        spec_id() + event2(0, 3, b"StartupLocality\x00\x07"),
        "StartupLocality 7 is not 0, 3 or 4",
    ),
    "oversized-log": (b"\x00" * (MAX_LOG_SIZE + 1), "more than the limit"),
}


@pytest.mark.parametrize("name", sorted(NEGATIVE_VECTORS))
def test_negative_vector_is_rejected_with_its_reason(name: str) -> None:
    data, message = NEGATIVE_VECTORS[name]
    with pytest.raises(MalformedEvidence, match=message):
        parse_event_log(data)


def test_malformed_error_names_event_and_offset() -> None:
    bad = GOOD + event2(1, EV_SEPARATOR, bytes(4))[:-2]
    with pytest.raises(MalformedEvidence) as info:
        parse_event_log(bad)
    assert info.value.where == "event 11"
    assert info.value.offset == len(GOOD) + 12 + 2 + 20 + 2 + 32


def test_good_log_verifies_against_its_quote() -> None:
    log = parse_event_log(GOOD)
    verified = verify_log(log, _quote_of(GOOD, HashAlg.SHA256), HashAlg.SHA256)
    assert len(verified.events) == 10
    assert verified.unquoted_pcrs == frozenset()
    assert all(verified.data_covered(e) for e in verified.events)


def test_tampered_event_fails_replay_naming_the_pcr() -> None:
    quote = _quote_of(GOOD, HashAlg.SHA256)
    tampered = GOOD.replace(b"Exit Boot Services Invocation", b"Exit Boot Services Invocatioo")
    # Digest recomputed by the builder? No: the bytes changed, the logged digest did not -> the
    # event data is no longer covered; re-digesting the event changes the replay instead.
    forged = simple_log().replace(
        event2(5, EV_EFI_ACTION, b"Exit Boot Services Invocation"),
        event2(5, EV_EFI_ACTION, b"Exit Boot Services Invocatioo"),
    )
    with pytest.raises(VerificationFailed) as info:
        verify_log(parse_event_log(forged), quote, HashAlg.SHA256)
    assert info.value.code == "pcr_replay_mismatch"
    assert "PCR5 (sha256)" in str(info.value)
    verified = verify_log(parse_event_log(tampered), quote, HashAlg.SHA256)
    changed = next(e for e in verified.events if e.pcr == 5 and e.event_type == EV_EFI_ACTION)
    assert verified.data_covered(changed) is False


def test_sha1_values_beside_sha256_quote_are_not_used() -> None:
    """CVE-2022-0317: a bank the quote does not cover proves nothing."""
    quote = _quote_of(GOOD, HashAlg.SHA256)
    with pytest.raises(VerificationFailed) as info:
        verify_log(parse_event_log(GOOD), quote, HashAlg.SHA1)
    assert info.value.code == "bank_not_quoted"


def test_events_in_unquoted_pcrs_are_left_out() -> None:
    quote = _quote_of(GOOD, HashAlg.SHA256, pcrs=[0, 1, 2, 3])
    verified = verify_log(parse_event_log(GOOD), quote, HashAlg.SHA256)
    assert {e.pcr for e in verified.events} == {0, 1, 2, 3}
    assert verified.unquoted_pcrs == frozenset({4, 5, 6, 7})


def test_extra_extend_not_in_log_is_a_mismatch() -> None:
    h = HashAlg.SHA256
    values = dict(_quote_of(GOOD, h).pcrs[h])
    values[4] = h.hash(values[4] + h.hash(b"rootkit"))  # the TPM holds one more extend
    quote = quote_of({h: values})
    with pytest.raises(VerificationFailed, match="PCR4"):
        verify_log(parse_event_log(GOOD), quote, h)


def test_quoted_pcr_without_events_is_reported_outside_log() -> None:
    values = dict(_quote_of(GOOD, HashAlg.SHA256).pcrs[HashAlg.SHA256])
    values[10] = HashAlg.SHA256.hash(b"ima")
    quote = quote_of({HashAlg.SHA256: values})
    verified = verify_log(parse_event_log(GOOD), quote, HashAlg.SHA256)
    assert verified.pcrs_outside_log == frozenset({10})


def test_bank_missing_from_log_is_refused() -> None:
    log_bytes = simple_log((HashAlg.SHA256,))
    quote = quote_of({HashAlg.SHA384: {0: bytes(48)}})
    with pytest.raises(VerificationFailed) as info:
        verify_log(parse_event_log(log_bytes), quote, HashAlg.SHA384)
    assert info.value.code == "bank_not_quoted" or info.value.code == "bank_not_in_log"


def test_sha1_format_log_builds_and_replays() -> None:
    data = sha1_event(0, 8, b"v1") + sha1_event(0, EV_SEPARATOR, bytes(4))
    log = parse_event_log(data)
    assert log.format == "sha1"
    h = HashAlg.SHA1
    expect = h.hash(h.hash(bytes(20) + h.hash(b"v1")) + h.hash(bytes(4)))
    assert replay(log).pcrs[h][0] == expect


def test_event_missing_a_bank_digest_makes_that_pcr_unverifiable() -> None:
    log_bytes = simple_log() + struct.pack("<IIIH", 4, EV_SEPARATOR, 1, 4) + bytes(20) + b"\0\0\0\0"
    log = parse_event_log(log_bytes)
    result = replay(log)
    assert 4 in result.incomplete[HashAlg.SHA256]
    values = replay(parse_event_log(simple_log())).pcrs[HashAlg.SHA256]
    quote = quote_of({HashAlg.SHA256: dict(values)})
    with pytest.raises(VerificationFailed) as info:
        verify_log(log, quote, HashAlg.SHA256)
    assert info.value.code == "pcr_replay_incomplete"
