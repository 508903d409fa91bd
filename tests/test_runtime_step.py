"""The service's runtime step (verifier.service.runtime_attest), pure: a node's IMA chunk continued
from the verifier's own prefix, verified against a genuine quote of PCR10, judged by runtime
policies. Every IMA list here is MADE to the kernel's format (tests/imalogbuilder.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

import pytest

from assay.algorithms import HashAlg
from golden.runtime import RuntimePolicy, freeze
from testkit.quotes import SoftwareAk
from verifier.appraisal.runtime import compile_runtime
from verifier.service.errors import Conflict
from verifier.service.runtime_attest import (
    ImaChunk,
    RuntimeOutcome,
    StoredPrefix,
    no_ima_log,
    prefix_of,
    runtime_step,
)
from verifier.service.runtime_policy import NodeRuntime
from verifier.store.runtime import ImaState

from . import imalogbuilder as made

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
BANK = HashAlg.SHA256
BOOT_PCRS = made.pcrs_0_9()
AK = SoftwareAk()


def made_entries(n: int = 5, *, first: int = 0) -> list[made.Made]:
    """Files /usr/bin/prog<first>… (made), after boot_aggregate when ``first`` is 0."""
    files = [
        made.file_entry(f"/usr/bin/prog{i}".encode(), b"content %d" % i)
        for i in range(first, first + n)
    ]
    return ([made.boot_aggregate_entry(BOOT_PCRS)] if first == 0 else []) + files


def policy(n: int = 20, *, status: Any = "active", reason: str | None = None) -> RuntimePolicy:
    files = {
        f"/usr/bin/prog{i}": ({BANK: hashlib.sha256(b"content %d" % i).digest()},) for i in range(n)
    }
    return RuntimePolicy(
        name="fleet-runtime",
        version="1",
        status=status,
        status_reason=reason,
        files=freeze(files),
        exclude=("/var/log/*",),
    )


def runtime(*policies: RuntimePolicy) -> NodeRuntime:
    compiled = compile_runtime(policies or (policy(),), NOW)
    return NodeRuntime(compiled, "key-" + ",".join(compiled.refs))


def quote(entries: Sequence[made.Made], *, reset: int = 1, pcr10: bytes | None = None) -> Any:
    from assay.tpm2 import ClockInfo, verify_quote

    values = {**BOOT_PCRS, 10: made.expected_pcr(entries, "sha256") if pcr10 is None else pcr10}
    pcrs = {BANK: values}
    nonce = b"n" * 32
    attest, sig = AK.quote(pcrs, nonce, clock_info=ClockInfo(5000, reset, 0, True))
    return verify_quote(attest, sig, AK.public, nonce, pcrs)


def step(
    prior: StoredPrefix | None,
    data: bytes,
    start: int,
    offset: int,
    q: Any,
    rt: NodeRuntime | None = None,
    *,
    applies: bool = True,
) -> RuntimeOutcome:
    return runtime_step(
        prior, ImaChunk(data, start, offset), q, BANK, rt or runtime(), applies=applies
    )


def reasons(out: RuntimeOutcome, status: str = "fail") -> list[str]:
    return [c["reason"] for c in out.checks if c["status"] == status]


def test_a_full_made_list_of_approved_files_passes_and_is_kept_with_its_end_as_cursor() -> None:
    entries = made_entries(5)
    data = made.binary(entries)
    out = step(None, data, 0, 0, quote(entries))
    assert out.applies and reasons(out) == [] and reasons(out, "unknown") == []
    assert [c["reason"] for c in out.checks] == ["ima_boot_aggregate_ok", "ima_entries_approved"]
    assert out.cursor == (6, len(data)) and out.judged == 6
    assert out.store is not None and out.store.approved == 6


def test_steady_state_judges_only_the_new_entries_and_counts_the_whole_boot() -> None:
    first = made_entries(5)
    data = made.binary(first)
    out1 = step(None, data, 0, 0, quote(first))
    more = made_entries(3, first=5)
    out2 = step(out1.store, made.binary(more), *out1.cursor, quote(first + more))
    assert out2.judged == 3 and reasons(out2) == []
    assert out2.cursor == (9, len(made.binary(first + more)))
    summary = out2.checks[-1]
    assert summary["reason"] == "ima_entries_approved"
    assert "9 of 9 IMA entries of this boot approved" in summary["message"]
    # the first chunk's boot_aggregate check is repeated, not recomputed
    assert out2.checks[0]["reason"] == "ima_boot_aggregate_ok"


def test_an_unknown_file_fails_naming_its_path_and_stays_failed_for_the_rest_of_the_boot() -> None:
    first = [*made_entries(2), made.file_entry(b"/tmp/evil", b"payload")]
    out1 = step(None, made.binary(first), 0, 0, quote(first))
    [bad] = [c for c in out1.checks if c["reason"] == "ima_file_not_approved"]
    assert "/tmp/evil" in bad["message"] and bad["got"] is not None
    more = made_entries(2, first=2)
    out2 = step(out1.store, made.binary(more), *out1.cursor, quote(first + more))
    assert out2.judged == 2
    assert "ima_file_not_approved" in reasons(out2)
    assert out2.checks[-1]["reason"] == "ima_entries_not_approved"


def test_a_changed_digest_fails_with_got_and_expected() -> None:
    entries = [made.boot_aggregate_entry(BOOT_PCRS), made.file_entry(b"/usr/bin/prog1", b"patched")]
    out = step(None, made.binary(entries), 0, 0, quote(entries))
    [bad] = [c for c in out.checks if c["reason"] == "ima_digest_mismatch"]
    assert bad["got"] == "sha256:" + hashlib.sha256(b"patched").hexdigest()
    assert hashlib.sha256(b"content 1").hexdigest() in (bad["expected"] or "")
    assert bad["golden"] == "fleet-runtime@1"


@pytest.mark.parametrize(
    ("start", "offset", "why"),
    [
        (4, 100, "the chunk starts at entry 4"),  # the agent lies about where it is
        (1, 1, "the chunk starts at entry 1"),
    ],
)
def test_a_chunk_claiming_another_start_than_the_verifiers_prefix_asks_for_the_full_list(
    start: int, offset: int, why: str
) -> None:
    first = made_entries(3)
    out1 = step(None, made.binary(first), 0, 0, quote(first))
    more = made_entries(1, first=3)
    with pytest.raises(Conflict) as caught:
        step(out1.store, made.binary(more), start, offset, quote(first + more))
    assert caught.value.code == "ima_full_log_required" and why in caught.value.message


def test_a_reboot_a_lost_prefix_or_a_policy_change_ask_for_the_full_list() -> None:
    first = made_entries(3)
    out1 = step(None, made.binary(first), 0, 0, quote(first))
    more = made_entries(1, first=3)
    chunk = (made.binary(more), *out1.cursor)
    cases = [
        (out1.store, quote(first + more, reset=2), runtime(), "rebooted"),
        (None, quote(first + more), runtime(), "holds no verified IMA prefix"),
        (
            out1.store,
            quote(first + more),
            runtime(policy(), RuntimePolicy(name="extra", version="2")),
            "changed",
        ),
    ]
    for prior, q, rt, why in cases:
        with pytest.raises(Conflict, match=why):
            step(prior, *chunk, q, rt)


def test_a_node_no_policy_applies_to_is_tracked_but_never_refused_nor_judged() -> None:
    first = made_entries(3)
    out1 = step(None, made.binary(first), 0, 0, quote(first), applies=False)
    assert out1.checks == [] and out1.cursor == (4, len(made.binary(first)))
    out2 = step(out1.store, b"garbage", 9, 9, quote(first), applies=False)
    assert out2.checks == [] and out2.store is None and out2.cursor == (0, 0)


def test_a_chunk_that_does_not_replay_to_the_quoted_pcr10_is_untrusted_and_drops_the_prefix() -> (
    None
):
    first = made_entries(3)
    out1 = step(None, made.binary(first), 0, 0, quote(first))
    hidden = made.file_entry(b"/tmp/evil", b"payload")
    shown = made_entries(1, first=3)
    # The TPM measured the evil file; the chunk leaves it out.
    out2 = step(out1.store, made.binary(shown), *out1.cursor, quote([*first, hidden, *shown]))
    assert reasons(out2) == ["ima_pcr_mismatch"]
    assert out2.store is None and out2.cursor == (0, 0)


def test_a_tampered_chunk_is_malformed_and_never_a_pass() -> None:
    entries = made_entries(3)
    data = bytearray(made.binary(entries))
    data[-3] ^= 1  # a name byte: no longer what the template hash covers
    out = step(None, bytes(data), 0, 0, quote(entries))
    assert reasons(out) == ["ima_log_malformed"] and out.store is None


def test_an_empty_list_against_a_pcr10_that_moved_is_a_mismatch() -> None:
    """verify_ima compares only the PCRs the entries touch; the step compares PCR10 anyway."""
    entries = made_entries(3)
    out = step(None, b"", 0, 0, quote(entries))
    assert reasons(out) == ["ima_pcr_mismatch"]
    first = made_entries(3)
    kept = step(None, made.binary(first), 0, 0, quote(first))
    later = [*first, *made_entries(1, first=3)]
    out2 = step(kept.store, b"", *kept.cursor, quote(later))
    assert reasons(out2) == ["ima_pcr_mismatch"]


def test_an_empty_chunk_when_nothing_new_was_measured_passes_and_keeps_the_cursor() -> None:
    first = made_entries(3)
    out1 = step(None, made.binary(first), 0, 0, quote(first))
    out2 = step(out1.store, b"", *out1.cursor, quote(first))
    assert out2.judged == 0 and reasons(out2) == [] and out2.cursor == out1.cursor


def test_entries_after_the_quote_are_not_judged_and_are_sent_again() -> None:
    first = made_entries(3)
    late = made.file_entry(b"/tmp/late", b"after the quote")
    out = step(None, made.binary([*first, late]), 0, 0, quote(first))
    assert out.judged == 4 and out.unquoted == 1 and reasons(out) == []
    assert out.cursor == (4, len(made.binary(first)))


def test_pcr10_not_quoted_is_unknown() -> None:
    from assay.tpm2 import verify_quote

    entries = made_entries(2)
    pcrs = {BANK: dict(BOOT_PCRS)}
    attest, sig = AK.quote(pcrs, b"n" * 32)
    q = verify_quote(attest, sig, AK.public, b"n" * 32, pcrs)
    out = step(None, made.binary(entries), 0, 0, q)
    assert reasons(out, "unknown") == ["ima_pcr_not_quoted"]


def test_no_ima_list_for_a_node_a_policy_applies_to_is_not_a_pass() -> None:
    out = no_ima_log(runtime())
    assert reasons(out, "unknown") == ["ima_log_missing"] and out.store is None


def test_only_a_revoked_policy_approving_a_file_fails_naming_the_revocation() -> None:
    entries = made_entries(2)
    live = RuntimePolicy(name="other", version="1", exclude=("/nothing/*",))
    revoked = policy(status="revoked", reason="CVE-2026-1: prog0 is exploitable")
    out = step(None, made.binary(entries), 0, 0, quote(entries), runtime(live, revoked))
    assert "ima_file_revoked" in reasons(out)
    assert any("CVE-2026-1" in c["message"] for c in out.checks)


def test_the_stored_prefix_round_trips_and_a_damaged_one_reads_as_none() -> None:
    first = made_entries(3)
    out = step(None, made.binary(first), 0, 0, quote(first))
    assert out.store is not None
    row = ImaState(node_id=1, **out.store.to_row())
    again = prefix_of(row)
    assert again == out.store
    row.replay = {**row.replay, "pcrs": {"sha256": {"10": "zz"}}}
    assert prefix_of(row) is None


def test_a_key_loaded_in_an_earlier_chunk_verifies_a_signed_file_in_a_later_one() -> None:
    """The stored prefix keeps the boot's key loads (assay.ima.KeyringLoads), also through an
    empty chunk and the stored form."""
    from .test_ima_keyrings import LEAF_DER, _policy, _signed

    keys = _policy()
    first = [made.buf_entry(b".ima", LEAF_DER)]
    out1 = step(None, made.binary(first), 0, 0, quote(first), runtime(keys))
    assert reasons(out1) == [] and out1.store is not None
    again = prefix_of(ImaState(node_id=1, **out1.store.to_row()))
    assert again is not None and again.keyring == out1.store.keyring
    idle = step(again, b"", *out1.cursor, quote(first), runtime(keys))
    later = [*first, _signed("signed")]
    out2 = step(idle.store, made.binary(later[1:]), *idle.cursor, quote(later), runtime(keys))
    assert reasons(out2) == [], out2.checks
