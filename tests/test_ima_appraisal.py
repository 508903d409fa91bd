"""Runtime appraisal: closed-world judgement of IMA entries against versioned runtime policies."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any

import pytest

from assay.algorithms import HashAlg
from assay.ima import (
    ImaReplay,
    ReviewedImaLog,
    VerifiedImaLog,
    assume_quoted_for_review,
    load_key,
    parse_ima_log,
    verify_ima,
)
from golden.model import Digests, digests
from golden.runtime import RuntimePolicy, Selinux, SigningKey, freeze
from testkit.quotes import quote_of
from verifier.appraisal.runtime import appraise_runtime, compile_runtime
from verifier.appraisal.verdict import FAIL, PASS, UNKNOWN, Check, Verdict, VerdictStatus

from . import imalogbuilder as b
from .test_ima_parse import _vector

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
BOOT = b.pcrs_0_9()
ENFORCING = b"initialized=1;enforcing=1;checkreqprot=0;network_peer_controls=1;"
PERMISSIVE = b"initialized=1;enforcing=0;checkreqprot=0;network_peer_controls=1;"
POLICY_IMAGE_HASH = hashlib.sha256(b"the policy.33 image").digest()


def _log(extra: Iterable[b.Made] = (), *, files: int = 3) -> list[b.Made]:
    made = [b.boot_aggregate_entry(BOOT)]
    made += [b.file_entry(f"/usr/bin/prog{i}".encode(), b"content %d" % i) for i in range(files)]
    made.append(b.buf_entry(b"kernel_version", b"6.1.0-13-amd64"))
    made += list(extra)
    return made


def _approve(made: Iterable[b.Made], version: str = "1", **kw: Any) -> RuntimePolicy:
    """A policy approving every file and buffer of ``made`` by its logged digest."""
    files: dict[str, list[Digests]] = {}
    buffers: dict[str, list[Digests]] = {}
    for m in made:
        if m.violation or m.fields[1] == b"boot_aggregate\0":
            continue
        alg, _, digest = m.fields[0].partition(b":\0")
        d = digests({HashAlg.from_bank(alg.decode()): digest})
        name = m.fields[1].rstrip(b"\0").decode("utf-8", "surrogateescape")
        (buffers if m.template == "ima-buf" else files).setdefault(name, []).append(d)
    return RuntimePolicy("fleet", version, files=freeze(files), buffers=freeze(buffers), **kw)


def _verified(made: list[b.Made]) -> VerifiedImaLog:
    log = parse_ima_log(b.binary(made))
    pcrs = dict(BOOT)
    pcrs[10] = b.expected_pcr(made, "sha256")
    return verify_ima(ImaReplay.initial(), log, quote_of({HashAlg.SHA256: pcrs}), HashAlg.SHA256)


def _reasons(checks: list[Check], status: object = FAIL) -> list[str]:
    return [c.reason for c in checks if c.status is status]


def test_a_log_every_entry_of_which_is_approved_is_trusted() -> None:
    made = _log()
    checks = appraise_runtime(_verified(made), [_approve(made)], NOW)
    assert Verdict.of(checks).status is VerdictStatus.TRUSTED
    assert [c.reason for c in checks] == ["ima_boot_aggregate_ok", "ima_entries_approved"]
    assert "5 of 5 IMA entries approved by fleet@1" in checks[-1].message


@pytest.mark.parametrize(
    "policies",
    [
        [],
        [RuntimePolicy("fleet", "1", status="draft")],
        [RuntimePolicy("fleet", "1", status="revoked", status_reason="CVE-2026-0001")],
        [RuntimePolicy("fleet", "1", valid_until=NOW)],
    ],
    ids=["empty", "draft", "revoked", "expired"],
)
def test_no_policy_in_force_is_never_a_pass(policies: list[RuntimePolicy]) -> None:
    checks = appraise_runtime(_verified(_log()), policies, NOW)
    assert [c.reason for c in checks] == ["ima_policy_not_in_force"]
    assert Verdict.of(checks).status is VerdictStatus.UNKNOWN


def test_an_unknown_binary_is_untrusted_naming_path_digest_and_policy() -> None:
    made = _log()
    evil = b.file_entry(b"/usr/local/bin/dropper", b"evil")
    checks = appraise_runtime(_verified([*made, evil]), [_approve(made, version="7")], NOW)
    (bad,) = [c for c in checks if c.reason == "ima_file_not_approved"]
    assert bad.event == 5 and bad.pcr == 10
    assert bad.got == "sha256:" + hashlib.sha256(b"evil").hexdigest()
    assert "/usr/local/bin/dropper" in bad.message and "fleet@7" in bad.message
    assert Verdict.of(checks).status is VerdictStatus.UNTRUSTED


def test_a_changed_binary_is_a_digest_mismatch_with_the_approved_digests() -> None:
    made = _log()
    changed = b.file_entry(b"/usr/bin/prog1", b"patched")
    checks = appraise_runtime(_verified([*made, changed]), [_approve(made)], NOW)
    (bad,) = [c for c in checks if c.reason == "ima_digest_mismatch"]
    assert bad.expected == "sha256:" + hashlib.sha256(b"content 1").hexdigest()
    assert bad.got == "sha256:" + hashlib.sha256(b"patched").hexdigest()
    assert bad.golden == "fleet@1"


def test_digest_of_another_path_does_not_approve_this_one() -> None:
    made = _log()
    moved = b.file_entry(b"/usr/bin/prog9", b"content 1")  # prog1's content under a new name
    checks = appraise_runtime(_verified([*made, moved]), [_approve(made)], NOW)
    assert "ima_file_not_approved" in _reasons(checks)


def test_during_a_rollout_either_version_approves() -> None:
    old = _log()
    new = [b.file_entry(b"/usr/bin/prog0", b"content 0 v2")]
    v1, v2 = _approve(old, version="1"), _approve(new, version="2")
    checks = appraise_runtime(_verified([*old, *new]), [v1, v2], NOW)
    assert Verdict.of(checks).status is VerdictStatus.TRUSTED


def test_a_file_only_a_revoked_version_approves_fails_naming_the_revocation() -> None:
    old = _log()
    vulnerable = b.file_entry(b"/usr/bin/sudo", b"sudo 1.9.0")
    revoked = _approve([vulnerable], version="1").with_status("revoked", "CVE-2026-1234 in sudo")
    checks = appraise_runtime(
        _verified([*old, vulnerable]), [_approve(old, version="2"), revoked], NOW
    )
    (bad,) = [c for c in checks if c.reason == "ima_file_revoked"]
    assert "fleet@1" in bad.message and "CVE-2026-1234" in bad.message


def test_exclusions_pass_unknown_files_and_violations_under_them_only() -> None:
    made = _log()
    extra = [
        b.file_entry(b"/var/log/app/out.log", b"anything"),
        b.violation_entry(b"/var/log/syslog"),
        b.violation_entry(b"/etc/shadow"),
    ]
    policy = _approve(made, exclude=("/var/log/*",))
    checks = appraise_runtime(_verified([*made, *extra]), [policy], NOW)
    assert _reasons(checks) == ["ima_violation", "ima_entries_not_approved"]
    (bad,) = [c for c in checks if c.reason == "ima_violation"]
    assert bad.event == 7 and "/etc/shadow" in bad.message


def test_an_unapproved_buffer_fails() -> None:
    made = _log()
    other = b.buf_entry(b"kernel_version", b"6.9.9-evil")
    checks = appraise_runtime(_verified([*made, other]), [_approve(made)], NOW)
    (bad,) = [c for c in checks if c.reason == "ima_buffer_not_approved"]
    assert bad.expected == "sha256:" + hashlib.sha256(b"6.1.0-13-amd64").hexdigest()


def test_boot_aggregate_must_match_the_quoted_pcrs() -> None:
    made = _log()
    made[0] = b.boot_aggregate_entry(b.pcrs_0_9(b"another boot"))
    checks = appraise_runtime(_verified(made), [_approve(made)], NOW)
    (bad,) = [c for c in checks if c.reason == "ima_boot_aggregate_mismatch"]
    assert "PCR0–9 (sha256)" in bad.message and bad.event == 0


def test_a_list_not_starting_with_boot_aggregate_fails() -> None:
    made = _log()[1:]
    checks = appraise_runtime(_verified(made), [_approve(made)], NOW)
    assert "ima_boot_aggregate_missing" in _reasons(checks)


def test_boot_aggregate_without_quoted_pcr8_9_is_unknown() -> None:
    made = _log()
    log = parse_ima_log(b.binary(made))
    pcrs = {i: BOOT[i] for i in range(8)} | {10: b.expected_pcr(made, "sha256")}
    verified = verify_ima(
        ImaReplay.initial(), log, quote_of({HashAlg.SHA256: pcrs}), HashAlg.SHA256
    )
    checks = appraise_runtime(verified, [_approve(made)], NOW)
    assert _reasons(checks, UNKNOWN) == ["ima_boot_aggregate_unverified"]
    assert Verdict.of(checks).status is VerdictStatus.UNKNOWN


def test_an_offline_review_cannot_vouch_for_boot_aggregate() -> None:
    made = _log()
    reviewed = assume_quoted_for_review(ImaReplay.initial(), parse_ima_log(b.binary(made)))
    checks = appraise_runtime(reviewed, [_approve(made)], NOW)
    assert Verdict.of(checks).status is VerdictStatus.UNKNOWN
    given = appraise_runtime(reviewed, [_approve(made)], NOW, boot_pcrs={HashAlg.SHA256: BOOT})
    assert Verdict.of(given).status is VerdictStatus.TRUSTED


def test_new_entries_alone_are_judged_after_a_stored_state() -> None:
    made = _log()
    data = b.binary(made)
    first = _verified(made[:3])
    later = [*made, b.file_entry(b"/usr/bin/unknown", b"?")]
    data = b.binary(later)
    chunk = parse_ima_log(
        data[first.state.offset :], start_index=3, start_offset=first.state.offset
    )
    pcrs = dict(BOOT) | {10: b.expected_pcr(later, "sha256")}
    second = verify_ima(first.state, chunk, quote_of({HashAlg.SHA256: pcrs}), HashAlg.SHA256)
    checks = appraise_runtime(second, [_approve(made)], NOW)
    assert [c.reason for c in checks] == ["ima_file_not_approved", "ima_entries_not_approved"]
    assert checks[0].event == 5 and "2 of 3 IMA entries" in checks[-1].message


def _selinux_log(*states: bytes, policy_hash: bytes | None = POLICY_IMAGE_HASH) -> list[b.Made]:
    extra = [b.buf_entry(b"selinux-state", s) for s in states]
    if policy_hash is not None:
        extra.append(b.buf_entry(b"selinux-policy-hash", policy_hash))
    return _log(extra)


def _selinux_policy(
    made: list[b.Made], hashes: tuple[bytes, ...] = (POLICY_IMAGE_HASH,)
) -> RuntimePolicy:
    base = _approve([m for m in made if not m.fields[1].startswith(b"selinux-")])
    return RuntimePolicy(
        base.name,
        base.version,
        files=base.files,
        buffers=base.buffers,
        selinux=Selinux(True, hashes),
    )


def test_selinux_enforcing_with_an_approved_policy_passes() -> None:
    made = _selinux_log(ENFORCING)
    checks = appraise_runtime(_verified(made), [_selinux_policy(made)], NOW)
    assert Verdict.of(checks).status is VerdictStatus.TRUSTED


def test_selinux_permissive_at_any_point_fails() -> None:
    made = _selinux_log(ENFORCING, PERMISSIVE)
    checks = appraise_runtime(_verified(made), [_selinux_policy(made)], NOW)
    (bad,) = [c for c in checks if c.reason == "selinux_not_enforcing"]
    assert bad.got == "enforcing=0" and bad.golden == "fleet@1"


def test_selinux_policy_not_approved_fails() -> None:
    made = _selinux_log(ENFORCING, policy_hash=hashlib.sha256(b"a laxer policy").digest())
    checks = appraise_runtime(_verified(made), [_selinux_policy(made)], NOW)
    assert "selinux_policy_not_approved" in _reasons(checks)


@pytest.mark.parametrize(
    ("states", "policy_hash", "missing"),
    [
        ((), POLICY_IMAGE_HASH, "selinux_state_missing"),
        (
            (b"initialized=0;enforcing=0;checkreqprot=0;",),
            POLICY_IMAGE_HASH,
            "selinux_state_missing",
        ),
        ((ENFORCING,), None, "selinux_policy_hash_missing"),
    ],
)
def test_selinux_data_the_policy_relies_on_must_be_logged(
    states: tuple[bytes, ...], policy_hash: bytes | None, missing: str
) -> None:
    made = _selinux_log(*states, policy_hash=policy_hash)
    checks = appraise_runtime(_verified(made), [_selinux_policy(made)], NOW)
    assert missing in _reasons(checks)


def test_selinux_entries_without_a_selinux_policy_are_unknown_buffers() -> None:
    made = _selinux_log(ENFORCING)
    base = _approve([m for m in made if not m.fields[1].startswith(b"selinux-")])
    checks = appraise_runtime(_verified(made), [base], NOW)
    assert _reasons(checks).count("ima_buffer_not_approved") == 2


def _keylime_evidence() -> ReviewedImaLog:
    log = parse_ima_log(_vector("keylime-openpower-ima-sig.ascii"))
    return assume_quoted_for_review(ImaReplay.initial(), log)


def _keys() -> tuple[SigningKey, ...]:
    pems = [_vector(n).decode() for n in ("keylime-rsa2048.pub.pem", "keylime-secp256k1.pub.pem")]
    return tuple(SigningKey(p, load_key(p.encode(), f"key{i}")) for i, p in enumerate(pems))


def test_required_signatures_verify_against_the_policy_keys() -> None:
    ev = _keylime_evidence()
    files = {e.name.decode(): (digests({HashAlg.SHA256: e.digest}),) for e in ev.entries[1:]}
    ok = RuntimePolicy(
        "sig",
        "1",
        files=files,
        keys=_keys(),
        require_signatures=("/usr/bin/*",),
        require_boot_aggregate=False,
    )
    assert _reasons(appraise_runtime(ev, [ok], NOW)) == []
    rsa_only = RuntimePolicy(
        "sig",
        "2",
        files=files,
        keys=_keys()[:1],
        require_signatures=("/usr/bin/*",),
        require_boot_aggregate=False,
    )
    checks = appraise_runtime(ev, [rsa_only], NOW)
    (bad,) = [c for c in checks if c.reason == "ima_signature_invalid"]
    assert "/usr/bin/zmore" in bad.message and "531f4025" in bad.message
    unsigned = RuntimePolicy(
        "sig",
        "3",
        files=files,
        keys=_keys(),
        require_signatures=("/lib/*",),
        require_boot_aggregate=False,
    )
    assert _reasons(appraise_runtime(ev, [unsigned], NOW)).count("ima_signature_invalid") == 2


def test_a_valid_signature_approves_an_unlisted_file_only_with_approve_signed() -> None:
    ev = _keylime_evidence()
    modules = {e.name.decode(): (digests({HashAlg.SHA256: e.digest}),) for e in ev.entries[1:3]}
    strict = RuntimePolicy("sig", "1", files=modules, keys=_keys(), require_boot_aggregate=False)
    assert _reasons(appraise_runtime(ev, [strict], NOW)).count("ima_file_not_approved") == 2
    lenient = RuntimePolicy(
        "sig", "1", files=modules, keys=_keys(), approve_signed=True, require_boot_aggregate=False
    )
    assert _reasons(appraise_runtime(ev, [lenient], NOW)) == []


def test_hostile_names_appear_escaped_in_messages() -> None:
    made = _log()
    hostile = b.file_entry(b"/tmp/\x1b[2J\nrm -rf \xff", b"x")
    checks = appraise_runtime(_verified([*made, hostile]), [_approve(made)], NOW)
    (bad,) = [c for c in checks if c.reason == "ima_file_not_approved"]
    assert "\\x1b[2J\\x0arm -rf \\xff" in bad.message and bad.message.isprintable()


def test_failures_are_capped_per_reason_with_a_count_of_the_rest() -> None:
    made = _log()
    flood = [b.file_entry(f"/tmp/f{i}".encode(), b"%d" % i) for i in range(120)]
    checks = appraise_runtime(_verified([*made, *flood]), [_approve(made)], NOW)
    assert _reasons(checks).count("ima_file_not_approved") == 51
    assert any(c.message == "and 70 more entries failing ima_file_not_approved" for c in checks)
    assert "120 not" in checks[-1].message


def test_compiled_policy_is_reused_and_gives_the_same_checks() -> None:
    made = _log()
    compiled = compile_runtime([_approve(made)], NOW)
    ev = _verified(made)
    assert appraise_runtime(ev, compiled) == appraise_runtime(ev, [_approve(made)], NOW)
    assert compiled.refs == ("fleet@1",)
    assert all(c.status is PASS for c in appraise_runtime(ev, compiled))
