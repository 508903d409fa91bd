"""IMA replay per bank and extend form, incrementally, and against genuine quotes."""

from __future__ import annotations

import hashlib

import pytest

from assay.algorithms import HashAlg
from assay.errors import VerificationFailed
from assay.ima import (
    ImaReplay,
    ImaReplayError,
    assume_quoted_for_review,
    boot_aggregate,
    parse_ima_log,
    replay_from,
    replay_ima,
    verify_ima,
)
from testkit.quotes import quote_of

from . import imalogbuilder as b
from .test_ima_parse import _vector

BANKS = {
    "sha1": HashAlg.SHA1,
    "sha256": HashAlg.SHA256,
    "sha384": HashAlg.SHA384,
    "sha512": HashAlg.SHA512,
}


@pytest.mark.parametrize("template", ["ima-ng", "ima-sig", "ima"])
@pytest.mark.parametrize("bank", sorted(BANKS))
def test_made_log_replays_to_the_kernels_value_in_each_bank(template: str, bank: str) -> None:
    made = b.typical(6, template=template)
    state = replay_ima(parse_ima_log(b.binary(made)))
    alg = BANKS[bank]
    assert state.value(alg, 10) == b.expected_pcr(made, bank)
    assert state.value(alg, 10, "sha1-padded") == b.expected_pcr(made, bank, mode="sha1-padded")
    assert state.entries == len(made) and state.violations == 1


def test_violation_extends_ff_of_the_bank_size_not_its_zero_hash() -> None:
    made = [b.violation_entry(b"/var/log/messages")]
    state = replay_ima(parse_ima_log(b.binary(made)))
    assert state.value(HashAlg.SHA256, 10) == hashlib.sha256(bytes(32) + b"\xff" * 32).digest()
    padded = hashlib.sha256(bytes(32) + b"\xff" * 20 + bytes(12)).digest()
    assert state.value(HashAlg.SHA256, 10, "sha1-padded") == padded
    assert state.value(HashAlg.SHA1, 10) == hashlib.sha1(bytes(20) + b"\xff" * 20).digest()


def test_keylime_vector_replays_its_sha1_chain() -> None:
    log = parse_ima_log(_vector("keylime-openpower-ima-sig.ascii"))
    value = bytes(20)
    for e in log.entries:
        value = hashlib.sha1(value + e.template_hash).digest()
    assert replay_ima(log).value(HashAlg.SHA1, 10) == value


def test_per_bank_file_replays_like_the_sha1_file() -> None:
    made = b.typical(3)
    a = replay_ima(parse_ima_log(b.binary(made)))
    c = replay_ima(parse_ima_log(b.binary(made, hash_alg="sha256")))
    assert a.pcrs == c.pcrs and a.padded == c.padded


def test_entries_naming_other_pcrs_extend_those() -> None:
    made = [b.file_entry(b"/a", b"a"), b.file_entry(b"/b", b"b", pcr=11), b.file_entry(b"/c", b"c")]
    state = replay_ima(parse_ima_log(b.binary(made)))
    assert state.value(HashAlg.SHA256, 11) == b.expected_pcr(made, "sha256", pcr=11)
    assert state.value(HashAlg.SHA256, 10) == b.expected_pcr(made, "sha256", pcr=10)
    assert sorted(state.pcrs[HashAlg.SHA256]) == [10, 11]


@pytest.mark.parametrize("cut", [0, 1, 4, 9, 10])
def test_replay_of_prefix_then_suffix_equals_replay_of_whole(cut: int) -> None:
    made = b.typical(7)
    data = b.binary(made)
    whole = parse_ima_log(data)
    offset = whole.entries[cut].offset if cut < len(whole.entries) else len(data)
    head = parse_ima_log(data[:offset])
    tail = parse_ima_log(data[offset:], start_index=cut, start_offset=offset)
    state = replay_from(replay_ima(head), tail)
    assert state == replay_ima(whole)
    assert (state.entries, state.offset) == (len(made), len(data))


def test_replay_refuses_entries_that_do_not_continue_the_state() -> None:
    whole = parse_ima_log(b.binary(b.typical(3)))
    state = replay_ima(parse_ima_log(b.binary(b.typical(3)[:2])))
    with pytest.raises(ImaReplayError, match="expected entry 2"):
        replay_from(state, whole.entries[3:])
    with pytest.raises(ImaReplayError, match="expected entry 0"):
        replay_from(ImaReplay.initial(), whole.entries[1:])
    assert replay_from(state, ()) is state


def _quote(
    made: list[b.Made], *, mode: str = "per-bank", banks: tuple[str, ...] = ("sha256",)
) -> dict[HashAlg, dict[int, bytes]]:
    pcrs: dict[HashAlg, dict[int, bytes]] = {}
    for bank in banks:
        size = BANKS[bank].digest_size
        values = b.pcrs_0_9(size=size)
        values[10] = b.expected_pcr(made, bank, mode=mode)
        pcrs[BANKS[bank]] = values
    return pcrs


def test_verify_ima_vouches_for_every_entry_when_the_quote_matches() -> None:
    made = b.typical(4)
    log = parse_ima_log(b.binary(made))
    verified = verify_ima(ImaReplay.initial(), log, quote_of(_quote(made)), HashAlg.SHA256)
    assert verified.entries == log.entries and verified.unquoted == ()
    assert verified.mode == "per-bank" and verified.state.entries == len(made)


def test_verify_ima_recognises_the_sha1_padded_form_of_older_kernels() -> None:
    made = b.typical(4)
    log = parse_ima_log(b.binary(made))
    quote = quote_of(_quote(made, mode="sha1-padded"))
    assert verify_ima(ImaReplay.initial(), log, quote, HashAlg.SHA256).mode == "sha1-padded"


def test_verify_ima_leaves_entries_appended_after_the_quote_unjudged() -> None:
    made = b.typical(4)
    log = parse_ima_log(b.binary(made))
    quote = quote_of(_quote(made[:5]))  # the kernel added two entries after the quote
    verified = verify_ima(ImaReplay.initial(), log, quote, HashAlg.SHA256)
    assert [e.index for e in verified.entries] == [0, 1, 2, 3, 4]
    assert [e.index for e in verified.unquoted] == [5, 6]
    assert verified.state.entries == 5 and verified.state.offset == log.entries[5].offset


def test_verify_ima_continues_from_a_stored_state() -> None:
    made = b.typical(4)
    data = b.binary(made)
    first = verify_ima(
        ImaReplay.initial(),
        parse_ima_log(data[: len(b.binary(made[:3]))]),
        quote_of(_quote(made[:3])),
        HashAlg.SHA256,
    )
    rest = parse_ima_log(
        data[first.state.offset :], start_index=first.state.entries, start_offset=first.state.offset
    )
    second = verify_ima(first.state, rest, quote_of(_quote(made)), HashAlg.SHA256)
    assert [e.index for e in second.entries] == [3, 4, 5, 6]
    assert second.state == replay_ima(parse_ima_log(data))


def test_verify_ima_fails_naming_the_pcr_when_no_prefix_matches() -> None:
    made = b.typical(4)
    log = parse_ima_log(b.binary(made))
    pcrs = _quote(made)
    pcrs[HashAlg.SHA256][10] = hashlib.sha256(b"other").digest()
    with pytest.raises(VerificationFailed, match="PCR10 \\(sha256\\)") as exc:
        verify_ima(ImaReplay.initial(), log, quote_of(pcrs), HashAlg.SHA256)
    assert exc.value.code == "ima_pcr_mismatch"


def test_verify_ima_refuses_entries_in_a_pcr_the_quote_does_not_cover() -> None:
    made = [b.file_entry(b"/a", b"a", pcr=11)]
    log = parse_ima_log(b.binary(made))
    with pytest.raises(VerificationFailed) as exc:
        verify_ima(ImaReplay.initial(), log, quote_of(_quote(made)), HashAlg.SHA256)
    assert exc.value.code == "ima_pcr_not_quoted"


def test_an_empty_list_never_verifies_against_a_quote_whose_pcr10_moved() -> None:
    made = b.typical(2)
    empty = parse_ima_log(b"")
    with pytest.raises(VerificationFailed) as exc:  # the node hid every entry
        verify_ima(ImaReplay.initial(), empty, quote_of(_quote(made)), HashAlg.SHA256)
    assert exc.value.code == "ima_pcr_mismatch"
    pcrs = _quote(made)
    del pcrs[HashAlg.SHA256][10]
    with pytest.raises(VerificationFailed) as exc:  # nor without PCR10 in the quote at all
        verify_ima(ImaReplay.initial(), empty, quote_of(pcrs), HashAlg.SHA256)
    assert exc.value.code == "ima_pcr_not_quoted"
    zeros = _quote([])
    assert verify_ima(ImaReplay.initial(), empty, quote_of(zeros), HashAlg.SHA256).entries == ()


def test_verify_ima_refuses_a_bank_the_quote_does_not_cover() -> None:
    made = b.typical(1)
    log = parse_ima_log(b.binary(made))
    with pytest.raises(VerificationFailed) as exc:
        verify_ima(ImaReplay.initial(), log, quote_of(_quote(made)), HashAlg.SHA384)
    assert exc.value.code == "bank_not_quoted"


def test_review_takes_the_files_own_replay_and_vouches_for_no_boot_pcrs() -> None:
    log = parse_ima_log(b.binary(b.typical(2)))
    reviewed = assume_quoted_for_review(ImaReplay.initial(), log)
    assert reviewed.entries == log.entries and dict(reviewed.boot_pcrs) == {}


@pytest.mark.parametrize(
    ("alg", "pcrs"), [("sha1", range(8)), ("sha256", range(10)), ("sha384", range(10))]
)
def test_boot_aggregate_covers_pcr0_7_for_sha1_and_pcr0_9_otherwise(alg: str, pcrs: range) -> None:
    size = BANKS[alg].digest_size
    values = b.pcrs_0_9(size=size)
    entry = parse_ima_log(b.binary([b.boot_aggregate_entry(values, alg=alg)])).entries[0]
    got = boot_aggregate(entry, {BANKS[alg]: values})
    assert got.matches and got.pcrs == tuple(pcrs)
    changed = dict(values)
    changed[9] = bytes(size)  # PCR9 counts only outside SHA-1
    assert boot_aggregate(entry, {BANKS[alg]: changed}).matches is (alg == "sha1")


def test_boot_aggregate_without_the_pcrs_it_needs_is_not_a_match() -> None:
    values = b.pcrs_0_9()
    entry = parse_ima_log(b.binary([b.boot_aggregate_entry(values)])).entries[0]
    partial = {HashAlg.SHA256: {i: values[i] for i in range(8)}}
    got = boot_aggregate(entry, partial)
    assert not got.matches and got.missing == (8, 9) and got.expected is None
