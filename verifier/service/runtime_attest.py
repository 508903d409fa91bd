"""The runtime half of an attestation: a node's IMA chunk, continued from the prefix the verifier
holds for this boot, verified against the quoted PCR10 and judged by the node's runtime policies.

``runtime_step`` (steps labelled in the code):
 1. where the chunk must start is the verifier's stored prefix of this boot (same reset and
    restart counters, judged by the same policies) — never the node's word. A full list (start
    0) is always taken; a chunk claiming any other start than the stored one (a reboot, a lost or
    stale offset, a changed policy) is refused with ``ima_full_log_required`` (409), so the
    agent sends the full list;
 2. PCR10 must be quoted in the verifier's bank (IMA's PCR: a list that measured nothing still
    has to say so to the quote);
 3. parse the chunk (bounded; entry numbers and byte offsets continue the stored prefix);
 4. verify: the stored prefix plus the chunk replays to the quoted PCR10 (``verify_ima``); the
    entries after the quoted prefix are not judged now and are sent again next time;
 5. judge the vouched entries (``appraise_runtime``) and add the failures of the earlier chunks
    of this boot (``carried``): an executed unknown file stays executed until a reboot;
 6. the new prefix, which ``attestation`` stores in the transaction that records the verdict.
Every failure in 2–4 is a failing or unknown check and a dropped prefix, never a pass. A node no
runtime policy applies to is only tracked (so its agent still sends only new entries): no check,
no refusal, whatever its chunk holds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence, VerificationFailed
from assay.ima import ImaReplay, KeyringLoads, VerifiedImaLog, parse_ima_log, verify_ima
from assay.tpm2 import VerifiedQuote
from verifier.appraisal import CheckStatus
from verifier.appraisal.runtime import appraise_runtime
from verifier.store import runtime as rstore

from .errors import Conflict
from .runtime_policy import NodeRuntime

IMA_PCR = 10
MISMATCH = "ima_pcr_mismatch"
"""``verify_ima``'s code for a list that does not replay to the quote (a failing check here)."""
MAX_CARRIED = 200
"""Failing checks kept from earlier chunks of one boot (each chunk caps its own per reason)."""
SUMMARY = "ima.entries"
KEEP_PASSING = frozenset({"ima.boot_aggregate"})
"""Passing checks of the first chunk repeated in every later verdict of the boot."""


@dataclass(frozen=True, slots=True)
class ImaChunk:
    """What the evidence claims about its IMA list: UNVERIFIED (the start is only compared with
    the verifier's own prefix; it never decides where replay begins)."""

    data: bytes
    start: int
    offset: int


@dataclass(frozen=True, slots=True)
class StoredPrefix:
    """A node's verified IMA prefix of one boot, as stored (``ima_states``)."""

    reset_count: int
    restart_count: int
    replay: ImaReplay
    carried: tuple[Mapping[str, Any], ...]
    approved: int
    failed: int
    policy_key: str
    keyring: KeyringLoads = field(default_factory=KeyringLoads)
    """The key loads of the prefix's entries (a later chunk's signatures may need them)."""

    def to_row(self) -> dict[str, Any]:
        return {
            "reset_count": self.reset_count,
            "restart_count": self.restart_count,
            "entries": self.replay.entries,
            "offset": self.replay.offset,
            "replay": {
                **replay_json(self.replay),
                "approved": self.approved,
                "failed": self.failed,
                "keyring": self.keyring.to_json(),
            },
            "carried": [dict(c) for c in self.carried],
            "policy_key": self.policy_key,
        }


@dataclass(frozen=True, slots=True)
class RuntimeOutcome:
    """The runtime part of one verdict, and what becomes of the node's stored prefix."""

    applies: bool
    """A runtime policy selects the node: its checks are part of the verdict."""
    checks: list[dict[str, Any]]
    policies: tuple[str, ...]
    store: StoredPrefix | None
    """The prefix to keep; None: drop the stored one (the next chunk must be the full list)."""
    cursor: tuple[int, int]
    """Where the agent's next chunk starts (entries, bytes): the prefix kept, or (0, 0)."""
    judged: int = 0
    unquoted: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """What the poster learns: where its next chunk starts (nothing about the policies)."""
        return {"entries": self.cursor[0], "offset": self.cursor[1]}


def full_log_required(why: str) -> Conflict:
    return Conflict("ima_full_log_required", f"send the full IMA list (from entry 0): {why}")


def _check(status: CheckStatus, reason: str, message: str, **kw: Any) -> dict[str, Any]:
    return {
        "id": kw.pop("id", "ima.replay"),
        "status": status,
        "reason": reason,
        "pcr": kw.pop("pcr", IMA_PCR),
        "event": kw.pop("event", None),
        "got": kw.pop("got", None),
        "expected": kw.pop("expected", None),
        "golden": kw.pop("golden", None),
        "message": message,
    }


def no_ima_log(rt: NodeRuntime) -> RuntimeOutcome:
    """A runtime policy selects the node but the evidence carries no IMA list: not a pass."""
    check = _check(
        CheckStatus.UNKNOWN,
        "ima_log_missing",
        "a runtime policy applies to this node but the evidence carries no IMA list "
        "(configure the agent's ima_log)",
        id="ima.log",
        golden=", ".join(rt.refs) or None,
    )
    return RuntimeOutcome(True, [check], rt.refs, None, (0, 0))


def runtime_step(
    prior: StoredPrefix | None,
    chunk: ImaChunk,
    quote: VerifiedQuote,
    bank: HashAlg,
    rt: NodeRuntime,
    *,
    applies: bool,
) -> RuntimeOutcome:
    """Steps 1–6 of the module docstring for one verified quote."""
    # 1. Where the chunk starts: the stored prefix, or a full list.
    boot = (quote.reset_count, quote.restart_count)
    state = _start(prior, chunk, boot, rt, applies, bank)
    if state is None:
        return _lost(applies, rt, "the chunk does not continue the verifier's prefix")
    # 2. PCR10 quoted.
    quoted = quote.pcrs.get(bank, {})
    if IMA_PCR not in quoted:
        return _failed(
            applies, rt, CheckStatus.UNKNOWN, "ima_pcr_not_quoted",
            f"the quote does not cover PCR{IMA_PCR} ({bank.bank}), which IMA extends",
        )  # fmt: skip
    # 3. Parse.
    try:
        log = parse_ima_log(
            chunk.data,
            start_index=state.entries,
            start_offset=state.offset,
            template_hash_alg=state.template_hash_alg if state.entries else None,
        )
    except MalformedEvidence as exc:
        return _failed(applies, rt, CheckStatus.FAIL, "ima_log_malformed", str(exc))
    # 4. Verify against the quote: the chunk, and PCR10 whatever the chunk touches.
    try:
        if state.entries == 0 and log.template_hash_alg != state.template_hash_alg:
            state = ImaReplay.initial(state.banks, log.template_hash_alg)
        verified = verify_ima(state, log, quote, bank)
    except VerificationFailed as exc:
        status = CheckStatus.FAIL if exc.code == MISMATCH else CheckStatus.UNKNOWN
        return _failed(applies, rt, status, exc.code, str(exc))
    problem = _pcr10_problem(verified, quoted)
    if problem is not None:
        return _failed(applies, rt, CheckStatus.FAIL, MISMATCH, problem)
    # 5-6. Judge and carry.
    if not applies:  # tracked, never judged: never continued under a policy (another key)
        loads = KeyringLoads((), verified.state.entries)
        kept = StoredPrefix(*boot, verified.state, (), 0, 0, rt.key, loads)
        return RuntimeOutcome(False, [], (), kept, _cursor(kept), 0, len(verified.unquoted))
    base = prior if prior is not None and chunk.start else None
    return _judge(verified, base, boot, rt)


def _start(
    prior: StoredPrefix | None,
    chunk: ImaChunk,
    boot: tuple[int, int],
    rt: NodeRuntime,
    applies: bool,
    bank: HashAlg,
) -> ImaReplay | None:
    """The replay to continue: from boot for a full list (only the verifier's bank: the PCR10
    kept per node is that bank's), else the stored prefix when the chunk continues it."""
    if chunk.start == 0 and chunk.offset == 0:
        return ImaReplay.initial((bank,))
    why = _why_not_continued(prior, chunk, boot, rt)
    if why is None:
        assert prior is not None
        return prior.replay
    if applies:
        raise full_log_required(why)
    return None


def _why_not_continued(
    prior: StoredPrefix | None, chunk: ImaChunk, boot: tuple[int, int], rt: NodeRuntime
) -> str | None:
    if prior is None:
        return "the verifier holds no verified IMA prefix for this node"
    if (prior.reset_count, prior.restart_count) != boot:
        return "the node rebooted (its TPM reset or restart counter moved)"
    if prior.policy_key != rt.key:
        return "the runtime policies changed since the prefix was judged"
    if (prior.replay.entries, prior.replay.offset) != (chunk.start, chunk.offset):
        return (
            f"the chunk starts at entry {chunk.start} (byte {chunk.offset}); the verified "
            f"prefix ends at entry {prior.replay.entries} (byte {prior.replay.offset})"
        )
    return None


def _pcr10_problem(verified: VerifiedImaLog, quoted: Mapping[int, bytes]) -> str | None:
    """``verify_ima`` compares the PCRs the entries touch; an empty list touches none, and the
    quoted PCR10 must still be what the prefix says."""
    got = verified.state.value(verified.bank, IMA_PCR, verified.mode)
    if got == quoted[IMA_PCR]:
        return None
    return (
        f"PCR{IMA_PCR} ({verified.bank.bank}): the IMA list replays to {got.hex()}, the quote "
        f"says {quoted[IMA_PCR].hex()}"
    )


def _lost(applies: bool, rt: NodeRuntime, why: str) -> RuntimeOutcome:
    return RuntimeOutcome(applies, [], rt.refs, None, (0, 0), notes=[why])


def _failed(
    applies: bool, rt: NodeRuntime, status: CheckStatus, reason: str, message: str
) -> RuntimeOutcome:
    checks = [_check(status, reason, message, golden=", ".join(rt.refs) or None)]
    return RuntimeOutcome(applies, checks if applies else [], rt.refs, None, (0, 0))


def _cursor(p: StoredPrefix) -> tuple[int, int]:
    return (p.replay.entries, p.replay.offset)


def _judge(
    verified: VerifiedImaLog, base: StoredPrefix | None, boot: tuple[int, int], rt: NodeRuntime
) -> RuntimeOutcome:
    """Step 5: the new entries' checks after the earlier chunks' failures, and one summary for
    the boot (``base`` is None for a full list: everything is judged again)."""
    loads = base.keyring if base is not None else KeyringLoads()
    # an empty chunk has nothing to judge (appraise_runtime takes its start from its first entry)
    judged = appraise_runtime(verified, rt.compiled, keyring=loads if verified.entries else None)
    checks = [c.to_json() for c in judged]
    if rt.compiled.empty:  # ima_policy_not_in_force: nothing judged, so nothing is kept
        return RuntimeOutcome(True, checks, rt.refs, None, (0, 0))
    try:
        loads = loads.extend(verified)
    except MalformedEvidence as exc:  # more key loads than a boot may make
        return _failed(True, rt, CheckStatus.FAIL, "ima_log_malformed", str(exc))
    new = [c for c in checks if c["id"] != SUMMARY]
    summary = next((c for c in checks if c["id"] == SUMMARY), None)
    approved_now = _approved(summary, len(verified.entries))
    earlier = [dict(c) for c in base.carried] if base is not None else []
    approved = (base.approved if base else 0) + approved_now
    failed = (base.failed if base else 0) + len(verified.entries) - approved_now
    out = earlier + new
    ok = failed == 0 and all(c["status"] == CheckStatus.PASS for c in out)
    total = verified.state.entries
    message = (
        f"{approved} of {total} IMA entries of this boot approved by {', '.join(rt.refs)}"
        + (f"; {failed} not" if failed else "")
        + f" ({len(verified.entries)} judged in this attestation)"
    )
    reason = "ima_entries_approved" if ok else "ima_entries_not_approved"
    status = CheckStatus.PASS if ok else CheckStatus.FAIL
    out.append(_check(status, reason, message, id=SUMMARY, pcr=None, golden=", ".join(rt.refs)))
    keep = [c for c in new if c["status"] != CheckStatus.PASS or c["id"] in KEEP_PASSING]
    carried = tuple(_capped(earlier + keep))
    kept = StoredPrefix(*boot, verified.state, carried, approved, failed, rt.key, loads)
    return RuntimeOutcome(
        True, out, rt.refs, kept, _cursor(kept), len(verified.entries), len(verified.unquoted)
    )


def _approved(summary: Mapping[str, Any] | None, judged: int) -> int:
    """The approved count ``appraise_runtime``'s summary states ("N of M IMA entries approved
    …"); unreadable counts as none approved (never more than were judged)."""
    head = str(summary.get("message", "")).split(" ", 1)[0] if summary else ""
    return min(int(head), judged) if head.isascii() and head.isdigit() else 0


def _capped(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(checks) <= MAX_CARRIED:
        return checks
    dropped = len(checks) - MAX_CARRIED + 1
    more = _check(
        CheckStatus.FAIL, "ima_entries_not_approved",
        f"and {dropped} more failing IMA checks earlier in this boot", id="ima.more.carried",
        pcr=None,
    )  # fmt: skip
    return [*checks[: MAX_CARRIED - 1], more]


# --- the stored form ----------------------------------------------------------------------------


def _pcrs(table: Mapping[HashAlg, Mapping[int, bytes]]) -> dict[str, dict[str, str]]:
    return {a.bank: {str(p): v.hex() for p, v in sorted(vals.items())} for a, vals in table.items()}


def replay_json(r: ImaReplay) -> dict[str, Any]:
    return {
        "entries": r.entries,
        "offset": r.offset,
        "violations": r.violations,
        "banks": [a.bank for a in r.banks],
        "template_hash_alg": r.template_hash_alg.bank,
        "pcrs": _pcrs(r.pcrs),
        "padded": _pcrs(r.padded),
    }


def _table(data: Any) -> Mapping[HashAlg, Mapping[int, bytes]]:
    return MappingProxyType(
        {
            HashAlg.from_bank(b): MappingProxyType(
                {int(p): bytes.fromhex(v) for p, v in vals.items()}
            )
            for b, vals in data.items()
        }
    )


def prefix_of(row: rstore.ImaState | None) -> StoredPrefix | None:
    """The stored prefix, or None when there is none or it cannot be read (then the node sends
    its full list: a damaged row never becomes a guessed state)."""
    if row is None:
        return None
    try:
        r = row.replay
        replay = ImaReplay(
            int(r["entries"]),
            int(r["offset"]),
            int(r["violations"]),
            tuple(HashAlg.from_bank(b) for b in r["banks"]),
            HashAlg.from_bank(r["template_hash_alg"]),
            _table(r["pcrs"]),
            _table(r["padded"]),
        )
        if (replay.entries, replay.offset) != (row.entries, row.offset):
            return None
        carried = tuple(dict(c) for c in row.carried)
        approved, failed = int(r["approved"]), int(r["failed"])
        keyring = KeyringLoads.from_json(r["keyring"])
        if keyring.entries != replay.entries:
            return None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return StoredPrefix(
        row.reset_count,
        row.restart_count,
        replay,
        carried,
        approved,
        failed,
        row.policy_key,
        keyring,
    )


def store_prefix(
    db: Any, node_id: int, outcome: RuntimeOutcome, attestation_id: int, now: dt.datetime
) -> None:
    """Step 6, in the transaction recording the verdict: keep the new prefix or drop the old."""
    if outcome.store is None:
        rstore.drop_ima_state(db, [node_id])
        return
    rstore.put_ima_state(
        db, node_id, attestation_id=attestation_id, now=now, **outcome.store.to_row()
    )


def combine_checks(
    boot: Sequence[Mapping[str, Any]], runtime: RuntimeOutcome
) -> list[dict[str, Any]]:
    return [dict(c) for c in boot] + [dict(c) for c in runtime.checks]
