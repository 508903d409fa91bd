"""Runtime appraisal: IMA entries a quote vouches for, judged against runtime policies. Pure.

``compile_runtime(policies, now)`` builds the lookup tables once (per policy change, not per
node); ``appraise_runtime(evidence, compiled)`` judges the entries of a
:class:`~assay.ima.VerifiedImaLog` (in steady state: only the entries added since the last
verified offset) and returns Checks:

1. a policy in force (none, or only drafts / retired / revoked: ``ima_policy_not_in_force``,
   never a pass);
2. the list starts with a boot_aggregate that matches the quoted PCR0–7 (SHA-1) or PCR0–9
   (checked on the chunk holding entry 0);
3. every entry, closed-world: a violation fails unless its name is excluded; a file passes when
   its digest is approved for its path, or a valid signature by a key of a policy with
   ``approve_signed`` approves it, or its name is excluded; a path matching a
   ``require_signatures`` glob needs a valid signature by a policy key besides; an ``ima-buf``
   entry needs an approved digest for its name (or an exclusion); nothing passes by default;
   a key the list loads onto a keyring some policy trusts (``trusted_keyrings``) counts, from the
   entry after its load on, as a key of the policies that trust that keyring (see
   :class:`_Keys`); a load onto any other keyring is an ordinary buffer;
4. SELinux, when a policy states it: every ``selinux-state`` with initialized=1 enforcing, every
   ``selinux-policy-hash`` approved, and (on a list from entry 0) both logged;
5. one summary check with the number of entries approved.

Policies combine like golden sets: approvals (digests, exclusions, signed-file approval) are ANY
policy in force; requirements (signatures, SELinux, boot_aggregate) add up over them. Policies
not in force approve nothing but are kept to say "revoked: <why>" when only they approve a file.
Names are shown escaped (they may be any bytes).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence
from assay.ima import (
    BANK_OF_NAME,
    BOOT_AGGREGATE,
    CERTIFICATE_ERRORS,
    SELINUX_POLICY_HASH,
    SELINUX_STATE,
    ImaEntry,
    ImaEvidence,
    ImaKey,
    ImaReplayError,
    KeyLoad,
    KeyringLoads,
    boot_aggregate,
    key_of_certificate,
    parse_certificate,
    parse_selinux_state,
    verify_modsig,
    verify_signature,
)
from assay.ima._replay import Pcrs
from golden.runtime import KeyringCa, RuntimePolicy, glob_regex, name_bytes

from .verdict import FAIL, PASS, UNKNOWN, Check, CheckStatus

MAX_FAILURES_PER_REASON = 50
Key = tuple[HashAlg, bytes]


@dataclass(frozen=True, slots=True)
class KeyringRule:
    """A policy in force trusts keys loaded onto one keyring: issued by one of ``cas`` (any key
    when empty); they approve signed files when the policy has ``approve_signed``."""

    ref: str
    cas: tuple[KeyringCa, ...]
    approve_signed: bool


def _no_rules() -> Mapping[bytes, tuple[KeyringRule, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class CompiledRuntime:
    """Runtime policies as lookup tables, for one point in time (``compiled_at``).

    ``files``/``buffers``: name → approved (bank, digest) → the policy that approves it;
    ``stale``: the same from policies not in force, with their status and reason.
    """

    compiled_at: dt.datetime
    refs: tuple[str, ...]
    not_in_force: tuple[tuple[str, str, str | None], ...]
    files: dict[bytes, dict[Key, str]]
    buffers: dict[bytes, dict[Key, str]]
    stale: dict[bytes, dict[Key, tuple[str, str, str | None]]]
    exclude: re.Pattern[bytes] | None
    require_signatures: re.Pattern[bytes] | None
    keys: tuple[ImaKey, ...]
    approving_keys: tuple[ImaKey, ...]
    selinux_enforcing: tuple[str, ...]
    selinux_hashes: dict[bytes, str]
    selinux_hash_refs: tuple[str, ...]
    boot_aggregate: tuple[str, ...]
    keyrings: Mapping[bytes, tuple[KeyringRule, ...]] = field(default_factory=_no_rules)

    @property
    def empty(self) -> bool:
        return not self.refs

    @property
    def judges_selinux(self) -> bool:
        return bool(self.selinux_enforcing or self.selinux_hash_refs)


def compile_runtime(policies: Sequence[RuntimePolicy], now: dt.datetime) -> CompiledRuntime:
    """Tables for the policies in force at ``now``; the others only for "revoked" messages."""
    live = [p for p in policies if p.in_force(now)]
    files: dict[bytes, dict[Key, str]] = {}
    buffers: dict[bytes, dict[Key, str]] = {}
    stale: dict[bytes, dict[Key, tuple[str, str, str | None]]] = {}
    for p in live:
        for table, source in ((files, p.files), (buffers, p.buffers)):
            for name, approved in source.items():
                slot = table.setdefault(name_bytes(name), {})
                for d in approved:
                    for alg, value in d.items():
                        slot.setdefault((alg, value), p.ref)
    for p in policies:
        if p not in live:
            for name, approved in p.files.items():
                slot2 = stale.setdefault(name_bytes(name), {})
                for d in approved:
                    for alg, value in d.items():
                        slot2.setdefault((alg, value), (p.ref, p.status, p.status_reason))
    hashes: dict[bytes, str] = {}
    for p in live:
        for h in p.selinux.policy_hashes if p.selinux else ():
            hashes.setdefault(h, p.ref)
    rings: dict[bytes, list[KeyringRule]] = {}
    for p in live:
        for ring in p.trusted_keyrings:
            rule = KeyringRule(p.ref, p.keyring_cas, p.approve_signed)
            rings.setdefault(name_bytes(ring), []).append(rule)
    return CompiledRuntime(
        compiled_at=now,
        refs=tuple(p.ref for p in live),
        not_in_force=tuple((p.ref, p.status, p.status_reason) for p in policies if p not in live),
        files=files,
        buffers=buffers,
        stale=stale,
        exclude=glob_regex(g for p in live for g in p.exclude),
        require_signatures=glob_regex(g for p in live for g in p.require_signatures),
        keys=tuple(k.key for p in live for k in p.keys),
        approving_keys=tuple(k.key for p in live if p.approve_signed for k in p.keys),
        selinux_enforcing=tuple(
            p.ref for p in live if p.selinux is not None and p.selinux.require_enforcing
        ),
        selinux_hashes=hashes,
        selinux_hash_refs=tuple(p.ref for p in live if p.selinux and p.selinux.policy_hashes),
        boot_aggregate=tuple(p.ref for p in live if p.require_boot_aggregate),
        keyrings=MappingProxyType({k: tuple(v) for k, v in rings.items()}),
    )


def appraise_runtime(
    evidence: ImaEvidence,
    policies: CompiledRuntime | Sequence[RuntimePolicy],
    now: dt.datetime | None = None,
    *,
    boot_pcrs: Pcrs | None = None,
    keyring: KeyringLoads | None = None,
) -> list[Check]:
    """Judge the evidence's entries (see the module docstring for the steps). ``policies`` are
    compiled here when given as a list (pass a CompiledRuntime to reuse the tables);
    ``boot_pcrs`` overrides the quoted PCR values boot_aggregate is checked with; ``keyring``
    holds the key loads of the entries before this chunk (``KeyringLoads.extend`` of every earlier
    chunk: keep it with the replay state) — without it, keys loaded before the chunk do not
    count."""
    if isinstance(policies, CompiledRuntime):
        compiled = policies
    else:
        compiled = compile_runtime(policies, now or dt.datetime.now(dt.UTC))
    # 1. Policy in force.
    if compiled.empty:
        return [_no_policy(compiled)]
    entries = evidence.entries
    full = bool(entries) and entries[0].index == 0
    checks: list[Check] = []
    # 2. boot_aggregate.
    if compiled.boot_aggregate and (full or evidence.state.entries == 0):
        pcrs = evidence.boot_pcrs if boot_pcrs is None else boot_pcrs
        checks.append(_check_boot_aggregate(entries, pcrs, compiled))
    # 3. Every entry; 4. SELinux.
    failures = _Failures()
    approved = 0
    keys = _Keys(compiled, entries[0].index if entries else 0, keyring)
    for e in entries:
        if e.index == 0 and e.name == BOOT_AGGREGATE:
            approved += 1  # judged by step 2
            continue
        bad = _judge(e, compiled, keys)
        if bad is None:
            approved += 1
        else:
            failures.add(bad)
    if compiled.judges_selinux:
        failures.extend(_selinux_presence(entries, compiled) if full else ())
    checks.extend(failures.checks())
    # 5. Summary.
    checks.append(
        Check(
            "ima.entries",
            PASS if not failures.count else FAIL,
            "ima_entries_approved" if not failures.count else "ima_entries_not_approved",
            f"{approved} of {len(entries)} IMA entries approved by {', '.join(compiled.refs)}"
            + (f"; {failures.count} not" if failures.count else ""),
            golden=", ".join(compiled.refs),
        )
    )
    return checks


def _no_policy(compiled: CompiledRuntime) -> Check:
    dead = "; ".join(
        f"{ref} is {status}" + (f" ({why})" if why else "")
        for ref, status, why in compiled.not_in_force
    )
    return Check(
        "ima.policy",
        UNKNOWN,
        "ima_policy_not_in_force",
        "no runtime policy is in force" + (f": {dead}" if dead else ""),
    )


class _Failures:
    """Failing checks, at most MAX_FAILURES_PER_REASON per reason (then one "and N more")."""

    def __init__(self) -> None:
        self.count = 0
        self._by_reason: dict[str, list[Check]] = {}
        self._dropped: dict[str, int] = {}

    def add(self, check: Check) -> None:
        self.count += 1
        kept = self._by_reason.setdefault(check.reason, [])
        if len(kept) < MAX_FAILURES_PER_REASON:
            kept.append(check)
        else:
            self._dropped[check.reason] = self._dropped.get(check.reason, 0) + 1

    def extend(self, checks: Iterator[Check] | tuple[Check, ...]) -> None:
        for c in checks:
            self.add(c)

    def checks(self) -> list[Check]:
        out = [c for kept in self._by_reason.values() for c in kept]
        for reason, n in self._dropped.items():
            out.append(
                Check(f"ima.more.{reason}", FAIL, reason, f"and {n} more entries failing {reason}")
            )
        return out


def _where(e: ImaEntry) -> str:
    return f"IMA entry {e.index} (PCR{e.pcr}, {e.template})"


def _digest_text(e: ImaEntry) -> str:
    return f"{e.digest_alg}:{e.digest.hex()}"


def _fail(e: ImaEntry, reason: str, message: str, **kw: str | None) -> Check:
    return Check(f"ima.entry.{e.index}", FAIL, reason, message, pcr=e.pcr, event=e.index, **kw)


class _Keys:
    """The keys an entry's signature is checked with: the policies' own, plus the keys loaded
    onto a trusted keyring by an entry before it. The kernel appraised an earlier file without a
    key loaded later, so a later load never approves an earlier entry; loads before this chunk
    (``prior``) are judged again with the policies now in force."""

    def __init__(self, c: CompiledRuntime, first: int, prior: KeyringLoads | None) -> None:
        self.all = c.keys
        self.approving = c.approving_keys
        self.prior_unknown = prior is None and first > 0 and bool(c.keyrings)
        if prior is not None and prior.entries != first:
            raise ImaReplayError(
                f"the keyring loads go through entry {prior.entries}, the chunk starts at {first}"
            )
        for load in prior.loads if prior is not None else ():
            self.load(load, c)

    def load(self, load: KeyLoad, c: CompiledRuntime) -> str | None:
        """Take a key load: None when a policy in force trusts it (the key counts from now on),
        else why none does."""
        rules = c.keyrings.get(load.keyring, ())
        ring = load.keyring.decode("utf-8", "replace")
        try:
            cert = parse_certificate(load.payload)
            key = key_of_certificate(cert, f"the key entry {load.index} loaded onto {ring}")
        except ValueError as exc:
            return f"the buffer is not an X.509 certificate with an RSA or EC key ({exc})"
        problems: list[str] = []
        trusted = [r for r in rules if not r.cas or _issued_by(cert, r.cas, problems)]
        if not trusted:
            return "; ".join(problems)
        self.all += (key,)
        if any(r.approve_signed for r in trusted):
            self.approving += (key,)
        return None


def _issued_by(cert: x509.Certificate, cas: tuple[KeyringCa, ...], problems: list[str]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca.cert)
        except (*CERTIFICATE_ERRORS, InvalidSignature):
            continue
        return True
    problems.append(
        f"{cert.subject.rfc4514_string()} is not issued by {', '.join(ca.label for ca in cas)}"
    )
    return False


def _judge_key_load(e: ImaEntry, c: CompiledRuntime, keys: _Keys) -> Check | None:
    assert e.buf is not None
    why = keys.load(KeyLoad(e.index, e.name, e.buf), c)
    if why is None:
        return None
    excluded = c.exclude is not None and c.exclude.match(e.name) is not None
    if excluded or _judge_digest(e, c.buffers, c, "ima_buffer_not_approved") is None:
        return None  # an approved buffer, but its key does not count
    refs = ", ".join(r.ref for r in c.keyrings[e.name])
    return _fail(
        e,
        "ima_keyring_key_untrusted",
        f"{_where(e)}: the key loaded onto {e.display_name} is not trusted by {refs}: {why}",
        got=_digest_text(e),
        golden=refs,
    )


def _judge(e: ImaEntry, c: CompiledRuntime, keys: _Keys) -> Check | None:
    """None when the entry is accounted for, else the failing check."""
    excluded = c.exclude is not None and c.exclude.match(e.name) is not None
    if e.violation:
        if excluded:
            return None
        return _fail(
            e,
            "ima_violation",
            f"{_where(e)}: measurement violation on "
            f"{e.display_name} (open for write while measured, or measured while open "
            f"for write): its content is unknown and the PCR was invalidated",
            got=e.display_name,
        )
    if e.buf is not None:
        if e.name in c.keyrings:
            return _judge_key_load(e, c, keys)
        if c.judges_selinux and e.name in (SELINUX_STATE, SELINUX_POLICY_HASH):
            return _judge_selinux(e, c)
        return None if excluded else _judge_digest(e, c.buffers, c, "ima_buffer_not_approved")
    alg = BANK_OF_NAME.get(e.digest_alg)
    if c.require_signatures is not None and c.require_signatures.match(e.name):
        bad = _signature_problem(e, keys.all)
        if bad is not None:
            if keys.prior_unknown:
                bad += " (keys the list loaded before this chunk were not given to the appraisal)"
            return _fail(
                e,
                "ima_signature_invalid",
                f"{_where(e)}: {e.display_name} needs a valid signature by a policy key: {bad}",
                got=_digest_text(e),
                golden=", ".join(c.refs),
            )
    allowed = c.files.get(e.name)
    if allowed is not None and alg is not None and (alg, e.digest) in allowed:
        return None
    if keys.approving and _signature_problem(e, keys.approving) is None:
        return None
    if excluded:
        return None
    return _judge_digest(e, c.files, c, "ima_digest_mismatch")


def _signature_problem(e: ImaEntry, keys: tuple[ImaKey, ...]) -> str | None:
    """None when the entry's xattr signature (v2/v3) or its appended signature (modsig) is valid
    by one of ``keys`` (either suffices, as for the kernel's ``appraise_type=imasig|modsig``);
    else why neither is."""
    problems = []
    if e.sig is not None:
        outcome, why = verify_signature(e.sig, e.digest_alg, e.digest, keys)
        if outcome == "valid":
            return None
        problems.append(why)
    if e.modsig is not None:
        outcome, why = verify_modsig(e.modsig, keys)
        if outcome == "valid":
            return None
        problems.append(why)
    return "; ".join(problems) or "the entry carries no signature"


def _judge_digest(
    e: ImaEntry, table: dict[bytes, dict[Key, str]], c: CompiledRuntime, mismatch: str
) -> Check | None:
    alg = BANK_OF_NAME.get(e.digest_alg)
    allowed = table.get(e.name)
    if allowed is not None and alg is not None and (alg, e.digest) in allowed:
        return None
    refs = ", ".join(c.refs)
    what = "buffer" if mismatch == "ima_buffer_not_approved" else "file"
    if allowed:
        expected = ", ".join(sorted({f"{a.bank}:{d.hex()}" for a, d in allowed}))
        return _fail(
            e,
            mismatch,
            f"{_where(e)}: {what} {e.display_name} has digest "
            f"{_digest_text(e)}, which no policy in force approves for it "
            f"(approved: {expected}; {refs})",
            got=_digest_text(e),
            expected=expected,
            golden=", ".join(sorted(set(allowed.values()))),
        )
    stale = c.stale.get(e.name, {}).get((alg, e.digest)) if alg is not None else None
    if stale is not None and mismatch == "ima_digest_mismatch":
        ref, status, why = stale
        return _fail(
            e,
            "ima_file_revoked",
            f"{_where(e)}: {e.display_name} "
            f"{_digest_text(e)} is approved only by {ref}, which is {status}"
            + (f": {why}" if why else ""),
            got=_digest_text(e),
            golden=ref,
        )
    reason = "ima_file_not_approved" if what == "file" else mismatch
    return _fail(
        e,
        reason,
        f"{_where(e)}: {what} {e.display_name} {_digest_text(e)} is not "
        f"approved by any policy in force ({refs}) and not excluded",
        got=_digest_text(e),
        golden=refs,
    )


def _judge_selinux(e: ImaEntry, c: CompiledRuntime) -> Check | None:
    assert e.buf is not None
    if e.name == SELINUX_POLICY_HASH:
        if not c.selinux_hash_refs or e.buf in c.selinux_hashes:
            return None
        approved = ", ".join(h.hex() for h in c.selinux_hashes)
        return _fail(
            e,
            "selinux_policy_not_approved",
            f"{_where(e)}: the loaded SELinux policy "
            f"hashes to {e.buf.hex()}, not an approved policy ({approved}; "
            f"{', '.join(c.selinux_hash_refs)})",
            got=e.buf.hex(),
            expected=approved,
            golden=", ".join(c.selinux_hash_refs),
        )
    try:
        state = parse_selinux_state(e.buf, where=f"IMA entry {e.index}", offset=e.offset)
    except MalformedEvidence as exc:
        return _fail(e, "selinux_state_unreadable", f"{_where(e)}: {exc}")
    if c.selinux_enforcing and state.initialized and not state.enforcing:
        return _fail(
            e,
            "selinux_not_enforcing",
            f"{_where(e)}: SELinux was permissive "
            f"(selinux-state enforcing=0 after the policy loaded); required by "
            f"{', '.join(c.selinux_enforcing)}",
            got="enforcing=0",
            expected="enforcing=1",
            golden=", ".join(c.selinux_enforcing),
        )
    return None


def _selinux_presence(entries: tuple[ImaEntry, ...], c: CompiledRuntime) -> Iterator[Check]:
    """On a list from entry 0: what the policy relies on must have been logged at all."""
    names = {e.name for e in entries if e.buf is not None}
    if c.selinux_enforcing and not any(_initialized(e) for e in entries):
        yield Check(
            "ima.selinux.state",
            FAIL,
            "selinux_state_missing",
            "no selinux-state critical data with a loaded policy (initialized=1) in the IMA "
            "list: SELinux is disabled or never loaded a policy, or IMA does not measure it "
            "(ima_policy=critical_data)",
            golden=", ".join(c.selinux_enforcing),
        )
    if c.selinux_hash_refs and SELINUX_POLICY_HASH not in names:
        yield Check(
            "ima.selinux.policy",
            FAIL,
            "selinux_policy_hash_missing",
            "no "
            "selinux-policy-hash critical data in the IMA list: no SELinux policy loaded, "
            "or IMA does not measure it",
            golden=", ".join(c.selinux_hash_refs),
        )


def _initialized(e: ImaEntry) -> bool:
    if e.buf is None or e.name != SELINUX_STATE:
        return False
    try:
        return parse_selinux_state(e.buf).initialized
    except MalformedEvidence:
        return False  # judged (and failed) by _judge_selinux


def _check_boot_aggregate(entries: tuple[ImaEntry, ...], pcrs: Pcrs, c: CompiledRuntime) -> Check:
    refs = ", ".join(c.boot_aggregate)
    first = entries[0] if entries else None
    if first is None or first.index != 0 or first.name != BOOT_AGGREGATE or first.violation:
        got = first.display_name if first is not None else "an empty list"
        message = f"the IMA list does not start with boot_aggregate (got {got}): it cannot be tied to this boot"
        return Check(
            "ima.boot_aggregate",
            FAIL,
            "ima_boot_aggregate_missing",
            message,
            event=0,
            got=got,
            golden=refs,
        )

    def check(status: CheckStatus, reason: str, message: str, expected: str | None = None) -> Check:
        got = _digest_text(first)
        return Check(
            "ima.boot_aggregate", status, reason, message, first.pcr, 0, got, expected, refs
        )

    result = boot_aggregate(first, pcrs)
    if result.bank is None:
        return check(
            FAIL,
            "ima_boot_aggregate_mismatch",
            f"boot_aggregate uses {first.digest_alg}, which is no PCR bank",
        )
    span = f"PCR{result.pcrs[0]}–{result.pcrs[-1]} ({result.bank.bank})"
    if result.expected is None:
        missing = ", PCR".join(map(str, result.missing))
        return check(
            UNKNOWN,
            "ima_boot_aggregate_unverified",
            f"boot_aggregate covers {span}, but the quote does not vouch for PCR{missing}",
        )
    expected = f"{first.digest_alg}:{result.expected.hex()}"
    if not result.matches:
        return check(
            FAIL,
            "ima_boot_aggregate_mismatch",
            f"boot_aggregate {first.digest.hex()} is not the hash of the quoted {span} ({result.expected.hex()}): the IMA list is not this boot's",
            expected,
        )
    return check(
        PASS, "ima_boot_aggregate_ok", f"boot_aggregate matches the quoted {span}", expected
    )
