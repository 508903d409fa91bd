"""The first appraisal of a boot is fast without changing any answer (issue 3 benchmark).

Coverage and decoded variables are kept by content across logs; GRUB commands are skipped by
prefix; checks are built from facts found in one pass. These tests pin that a cache hit needs the
exact same bytes and that the shortcuts see everything the checks read.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from assay import bootfacts
from assay.algorithms import HashAlg
from assay.bootfacts import extract
from assay.errors import AssayError
from assay.eventlog import (
    BootLog,
    Event,
    LogCaches,
    ReviewedBootLog,
    _coverage,
    assume_quoted_for_review,
    parse_event_log,
    verify_log,
)
from assay.events import EventType
from golden.capture import capture
from verifier.appraisal import appraise, compile_golden

from .conftest import CORPUS
from .logbuilder import event2, simple_log, variable_data, variable_value

NOW = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
SHA256 = HashAlg.SHA256
BENCH_LOGS = (
    "go-tpm-tools/ubuntu-2104-no-secure-boot.bin",
    "keylime/binary_bios_measurements",
    "rust-keylime/uefi_log.bin",
    "python3-uefi-eventlog/css-flex14vm4-bootlog.bin",
)


CACHES = LogCaches()  # what a verifier process shares between the logs it appraises


def _event(index: int, pcr: int, etype: int, data: bytes, digest: bytes) -> Event:
    return Event(index, pcr, etype, {SHA256: digest}, data, 0)


def _vlog(*events: Event) -> ReviewedBootLog:
    return ReviewedBootLog(
        bank=SHA256,
        pcrs={},
        events=events,
        all_events=events,
        pcrs_outside_log=frozenset(),
        unquoted_pcrs=frozenset(),
        workarounds=(),
        warnings=(),
        start_locality=0,
        caches=CACHES,
    )


def test_coverage_cache_hit_needs_the_same_bytes_not_just_the_same_digest() -> None:
    digest = SHA256.hash(bytes(4))
    honest = _event(1, 7, EventType.EV_SEPARATOR, bytes(4), digest)
    forged = _event(2, 7, EventType.EV_SEPARATOR, b"\x01\x00\x00\x00", digest)
    assert _coverage.data_covered(honest, SHA256, CACHES.coverage) == (True, None, True)
    assert _coverage.data_covered(forged, SHA256, CACHES.coverage) == (False, None, False)
    # not poisoned by the forgery
    assert _coverage.data_covered(honest, SHA256, CACHES.coverage) == (True, None, True)


def test_a_boot_variable_hashed_over_its_value_is_covered_but_not_whole() -> None:
    """edk2 hashes EV_EFI_VARIABLE_BOOT over VariableData (the spec's rule): covered, with no
    workaround, but its name and GUID are not — so nothing may read a value by its name. Hashed
    over the whole UEFI_VARIABLE_DATA it is whole; over anything else, not covered."""
    data = variable_data("Boot0001", b"\x01\x00\x00\x00load option")
    value = variable_value(data)
    boot = EventType.EV_EFI_VARIABLE_BOOT
    cache = LogCaches().coverage
    over_value = _event(3, 1, boot, data, SHA256.hash(value))
    over_all = _event(4, 1, boot, data, SHA256.hash(data))
    over_neither = _event(5, 1, boot, data, SHA256.hash(value + b"\x00"))
    for _ in range(2):  # computed, then from the cache: the same answers
        assert _coverage.data_covered(over_value, SHA256, cache) == (True, None, False)
        assert _coverage.data_covered(over_all, SHA256, cache) == (True, None, True)
        assert _coverage.data_covered(over_neither, SHA256, cache) == (False, None, False)


def test_an_edk2_logs_boot_variables_are_covered_but_none_is_whole() -> None:
    """On real edk2 firmware (OVMF) every Boot#### / BootOrder digest is over VariableData: the
    log's BootLog says each is covered and none fully, and no Secure Boot fact comes from PCR1."""
    log = parse_event_log(
        (CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin").read_bytes()
    )
    vlog = assume_quoted_for_review(log, SHA256)
    boot = [e for e in vlog.events if e.event_type == EventType.EV_EFI_VARIABLE_BOOT]
    assert len(boot) >= 2
    assert all(vlog.data_covered(e) is True for e in boot)
    assert not any(vlog.fully_covered(e) for e in boot)
    assert all(v.event.pcr == 7 for vs in extract(vlog).variables.values() for v in vs)


def test_cached_coverage_workaround_names_each_events_own_position() -> None:
    data = variable_data("SbatLevel", b"sbat,1,2021030218\n")
    short = SHA256.hash(data[:-1])  # old shim's one-byte-short digest
    first = _coverage.data_covered(
        _event(10, 7, EventType.EV_EFI_VARIABLE_AUTHORITY, data, short), SHA256, CACHES.coverage
    )
    second = _coverage.data_covered(
        _event(42, 7, EventType.EV_EFI_VARIABLE_AUTHORITY, data, short), SHA256, CACHES.coverage
    )
    assert first[0] is True and second[0] is True
    assert first[1] is not None and second[1] is not None
    assert (first[1].pcr, first[1].event) == (7, 10)
    assert (second[1].pcr, second[1].event) == (7, 42)


def test_decoded_variable_cache_does_not_carry_a_value_to_different_bytes() -> None:
    on = variable_data("SecureBoot", b"\x01")
    off = variable_data("SecureBoot", b"\x00")
    digest = SHA256.hash(on)
    config = EventType.EV_EFI_VARIABLE_DRIVER_CONFIG
    got_on = extract(_vlog(_event(0, 7, config, on, digest))).variables["SecureBoot"]
    # Same digest, other bytes: not covered, so no SecureBoot variable at all (a value is read
    # only from covered data), and the cached "on" must not leak into it.
    got_off = extract(_vlog(_event(0, 7, config, off, digest))).variables
    assert [v.value for v in got_on] == [b"\x01"]
    assert "SecureBoot" not in got_off


def test_grub_kernel_cmdline_is_not_mistaken_for_a_skipped_grub_command() -> None:
    ipl = EventType.EV_IPL
    cmd = b"grub_cmd: linux /vmlinuz root=/dev/sda1"
    kernel = b"grub_kernel_cmdline /vmlinuz root=/dev/sda1 ro"
    vlog = _vlog(
        _event(0, 8, ipl, cmd, SHA256.hash(cmd[len(b"grub_cmd: ") :])),
        _event(1, 8, ipl, kernel, SHA256.hash(kernel[len(b"grub_kernel_cmdline ") :])),
    )
    facts = extract(vlog)
    assert [(e.index, text) for e, text in facts.cmdlines] == [(1, "/vmlinuz root=/dev/sda1 ro")]


def test_events_not_allowed_are_grouped_by_pcr_in_first_appearance_order() -> None:
    sep = SHA256.hash(bytes(4))
    odd = 0xDEAD
    vlog = _vlog(
        _event(0, 5, odd, b"a", b"x" * 32),
        _event(1, 1, odd, b"b", b"y" * 32),
        _event(2, 5, EventType.EV_SEPARATOR, bytes(4), sep),
        _event(3, 5, odd, b"c", b"z" * 32),
        _event(4, 12, odd, b"d", b"w" * 32),
    )
    bad = extract(vlog).events_not_in({5: frozenset({int(EventType.EV_SEPARATOR)})})
    assert [e.index for e in bad] == [0, 3, 1, 4]


def test_separator_checks_use_positions_found_during_extraction() -> None:
    log = simple_log() + event2(4, 0x80000007, b"Calling EFI Application from Boot Option")
    log += event2(4, 0x80000007, b"Calling EFI Application from Boot Option")
    log += event2(0, 0x80000008, b"after the separator")  # a firmware blob after PCR0's separator
    vlog = assume_quoted_for_review(parse_event_log(log), SHA256)
    facts = extract(vlog)
    for pcr, positions in facts.separators.items():
        assert [facts.by_pcr[pcr][i].event_type for i in positions] == [EventType.EV_SEPARATOR]
    verdict = appraise(vlog, compile_golden([capture(vlog, name="t", version="1")], now=NOW))
    late = [c for c in verdict.checks if c.reason == "event_after_separator"]
    assert [(c.pcr, c.event) for c in late] == [(0, 13)]  # index 0 is the Spec ID event


def _clear_caches() -> None:
    CACHES.clear()
    bootfacts.signature_database.cache_clear()


@pytest.mark.parametrize("name", BENCH_LOGS)
def test_warm_caches_give_the_same_verdict_as_cold_ones(name: str) -> None:
    log = parse_event_log((CORPUS / name).read_bytes())
    bank = SHA256 if SHA256 in log.banks else log.banks[0]
    policy = compile_golden(
        [capture(assume_quoted_for_review(log, bank), name="self", version="1")], now=NOW
    )
    other = compile_golden([capture(_other_vlog(name), name="other", version="1")], now=NOW)
    for pol in (policy, other):
        _clear_caches()
        cold = appraise(assume_quoted_for_review(log, bank, caches=CACHES), pol)
        warm = appraise(assume_quoted_for_review(log, bank, caches=CACHES), pol)
        assert warm == cold
    _clear_caches()
    assert appraise(assume_quoted_for_review(log, bank), policy).status == "trusted"
    assert appraise(assume_quoted_for_review(log, bank), other).status == "untrusted"


def _other_vlog(name: str) -> BootLog:
    other = BENCH_LOGS[(BENCH_LOGS.index(name) + 1) % len(BENCH_LOGS)]
    log = parse_event_log(Path(CORPUS / other).read_bytes())
    return assume_quoted_for_review(log, SHA256 if SHA256 in log.banks else log.banks[0])


# --- replayed chains (LogCaches.chains) ----------------------------------------------------------


def _corpus_logs() -> list[Path]:
    out = []
    for path in sorted(CORPUS.glob("*/*")):
        if path.suffix in (".json", ".yaml", ".tsv", ".md", ".b64"):
            continue
        try:
            parse_event_log(path.read_bytes())
        except AssayError:  # only the logs that parse are replayed
            continue
        out.append(path)
    return out


def test_kept_chains_replay_every_corpus_log_as_the_plain_replay() -> None:
    """Every bank of every corpus log replays to the same values, incomplete PCRs and warnings
    with the chain cache as without, on the first pass (chains computed) and the second (hits)."""
    from assay.eventlog._replay import _measured, _replay

    caches = LogCaches()
    logs = _corpus_logs()
    assert len(logs) > 40
    for _ in range(2):
        for path in logs:
            log = parse_event_log(path.read_bytes())
            events = _measured(log)
            plain = _replay(log, events, log.banks)
            kept = _replay(log, events, log.banks, caches)
            assert kept == plain, path
    assert len(caches.chains) > 100


def test_a_kept_chain_is_used_only_for_the_same_digests_and_start() -> None:
    """One digest changed, or PCR0 started at another locality: never another log's chain."""
    from assay.eventlog._replay import _replay_bank, _replay_bank_kept

    log = parse_event_log((CORPUS / "rust-keylime/uefi_log.bin").read_bytes())
    events = [e for e in log.events if e.event_type != EventType.EV_NO_ACTION]
    caches = LogCaches()
    before, _, _ = _replay_bank_kept(events, SHA256, 0, caches)
    assert before == _replay_bank(events, SHA256, 0)[0]
    # The same events but one PCR4 digest: PCR4 differs, every other PCR is the same.
    at = next(i for i, e in enumerate(events) if e.pcr == 4)
    changed = list(events)
    e = events[at]
    changed[at] = e._replace(digests={SHA256: bytes(32)})
    after, _, _ = _replay_bank_kept(changed, SHA256, 0, caches)
    assert after == _replay_bank(changed, SHA256, 0)[0]
    assert after[4] != before[4] and {p: v for p, v in after.items() if p != 4} == {
        p: v for p, v in before.items() if p != 4
    }
    # PCR0 from locality 3: another starting value, so another chain.
    at3, _, _ = _replay_bank_kept(events, SHA256, 3, caches)
    assert at3 == _replay_bank(events, SHA256, 3)[0] and at3[0] != before[0]


def test_kept_chains_are_bounded_by_their_digests() -> None:
    from assay.eventlog._replay import _replay_bank_kept

    log = parse_event_log((CORPUS / "rust-keylime/uefi_log.bin").read_bytes())
    events = [e for e in log.events if e.event_type != EventType.EV_NO_ACTION]
    longest = max(sum(1 for e in events if e.pcr == p) for p in {e.pcr for e in events})
    caches = LogCaches(max_chain_digests=longest - 1)
    _replay_bank_kept(events, SHA256, 0, caches)
    kept = sum(len(chain) for _, _, chain in caches.chains)
    assert 0 < kept <= longest - 1  # emptied when full; the longest chain never kept
    assert all(len(chain) < longest for _, _, chain in caches.chains)
    caches.clear()
    assert not caches.chains


def _counted(vlog: BootLog, pcr: int) -> dict[bytes | None, int]:
    counts: dict[bytes | None, int] = {}
    for e in vlog.events:
        if e.pcr == pcr:
            d = e.digests.get(vlog.bank)
            counts[d] = counts.get(d, 0) + 1
    return counts


def test_digest_counts_read_from_the_replayed_chains_are_the_events_own() -> None:
    """The closed-world check counts each PCR's digests from the chain the replay kept: for every
    bank of every corpus log the chain is that PCR's events' digests in order, and the counts are
    a count of the events — also where a workaround added events the log did not have (the
    go-attestation log missing ExitBootServices), whose PCR keeps no chain."""
    from testkit.quotes import quote_of

    logs = 0
    for path in _corpus_logs():
        log = parse_event_log(path.read_bytes())
        for bank in log.banks:
            vlog = assume_quoted_for_review(log, bank, caches=LogCaches())
            assert vlog.chains or not vlog.events, path
            for pcr, chain in vlog.chains.items():
                assert chain == tuple(e.digests[bank] for e in vlog.events if e.pcr == pcr)
            pcrs = frozenset(e.pcr for e in vlog.events)
            got = bootfacts.extended_digests(vlog, extract(vlog), pcrs)
            assert got == {p: _counted(vlog, p) for p in pcrs}, (path, bank)
            logs += 1
    assert logs > 60
    path = CORPUS / "go-attestation/ebs_event_missing_eventlog"
    want = json.loads(path.with_name(path.name + ".expected_pcrs.json").read_text())["pcrs"]
    log = parse_event_log(path.read_bytes())
    pcr0 = assume_quoted_for_review(log, HashAlg.SHA1).pcrs[0]
    quoted = {HashAlg.SHA1: {0: pcr0, 5: bytes.fromhex(want["sha1"]["5"])}}
    vlog = verify_log(log, quote_of(quoted), HashAlg.SHA1, caches=LogCaches())
    assert vlog.workarounds and set(vlog.chains) == {0}
    got = bootfacts.extended_digests(vlog, extract(vlog), frozenset({0, 5}))
    assert got == {0: _counted(vlog, 0), 5: _counted(vlog, 5)}
    assert sum(got[5].values()) == sum(1 for e in log.events if e.pcr == 5) + 2


def test_clearing_the_caches_keeps_only_what_it_is_told_to() -> None:
    caches = LogCaches()
    log = parse_event_log((CORPUS / "rust-keylime/uefi_log.bin").read_bytes())
    vlog = assume_quoted_for_review(log, SHA256, caches=caches)
    bootfacts.extended_digests(vlog, extract(vlog), frozenset(range(24)))
    sizes = {n: len(getattr(caches, n)) for n in ("coverage", "variables", "extended", "chains")}
    assert all(sizes.values()), sizes
    caches.clear(keep={"chains", "variables"})
    left = {n: len(getattr(caches, n)) for n in sizes}
    assert left == {
        "coverage": 0,
        "variables": sizes["variables"],
        "extended": 0,
        "chains": sizes["chains"],
    }
    caches.clear()
    assert not any(len(getattr(caches, n)) for n in sizes)
