"""The closed world: every digest extended into a PCR the policy relies on is accounted for.

An attacker with a genuine quote can rewrite everything in an event log except the digests (the
replay must still equal the quote): event types, descriptions, device paths, variable names under
a data-only digest. So the last word on a relied-on PCR is a ledger over its digests. Each event is
accounted for by exactly one of:

1. a check that judged it by its digest or by data the digest covers (``Ledger.take``): a boot
   application, a Secure Boot variable, a command line, … — passing or failing;
2. a spec-fixed digest: the separator values in PCR0–7, the EFI action strings the PC Client
   profile defines for PCR4/PCR5 (:data:`FIXED_ACTIONS`);
3. a digest some golden set in force approves for that PCR (``CompiledPolicy.approved``);
4. covered data that an approved value matches: an S-CRTM version text in PCR0, a command line in
   PCR8/PCR12, a parameterised legacy action in PCR4/PCR6.

Anything else is a failure naming the PCR, the event, its type *as logged* and its digest. The
type only picks the reason code shown; it never exempts an event.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator

from assay.algorithms import HashAlg
from assay.bootfacts import BootFacts, extended_digests, grub_text, scrtm_text
from assay.eventlog import GRUB_PREFIXES, BootLog, Event
from assay.events import event_type_name
from assay.pcclient import fixed_action_text

from .policy import CompiledPolicy
from .verdict import FAIL, PASS, UNKNOWN, Check

_INDEX = operator.itemgetter(0)  # Event.index


class Ledger:
    """Which events the checks of one appraisal judged: their indices, and how many events of
    each (PCR, digest) pair. Local to one appraisal."""

    __slots__ = ("bank", "pairs", "taken")

    def __init__(self, bank: HashAlg) -> None:
        self.bank = bank
        self.taken: set[int] = set()
        self.pairs: dict[tuple[int, bytes | None], int] = {}

    def take(self, event: Event) -> None:
        taken = self.taken
        index = event.index
        if index not in taken:
            taken.add(index)
            key = (event.pcr, event.digests.get(self.bank))
            pairs = self.pairs
            pairs[key] = pairs.get(key, 0) + 1


def _covered_text(vlog: BootLog, e: Event) -> str | None:
    """The text a PCR8/PCR12 string event's digest covers (its uncovered prefix removed)."""
    if vlog.data_covered(e) is not True:
        return None
    data = e.data
    for prefix in GRUB_PREFIXES:
        if data.startswith(prefix):
            return grub_text(data[len(prefix) :])
    return grub_text(data)


def _content_approved(vlog: BootLog, e: Event, policy: CompiledPolicy) -> bool:
    """4. covered data that an approved value matches (see the module docstring)."""
    pcr = e.pcr
    if pcr == 0:
        return vlog.fully_covered(e) and scrtm_text(e.data) in policy.scrtm
    if pcr in (8, 12):
        text = _covered_text(vlog, e)
        if text is None:
            return False
        if text in policy.cmdline_exact:
            return True
        return any(p.fullmatch(text) for p, _, _ in policy.cmdline_regex)
    return fixed_action_text(vlog, e)


def _unaccounted(e: Event, bank: HashAlg, digest: bytes, policy: CompiledPolicy) -> Check:
    revoked = policy.revoked.get((e.pcr, bank, digest))
    if revoked:
        return _revoked(e, digest, revoked, policy)
    cid, reason = ("events.accounted", "event_not_accounted")
    if e.pcr == 14 and policy.moklist:
        cid, reason = ("shim.moklist", "moklist_not_approved")
    in_force = ", ".join(policy.in_force) or "no golden set in force"
    return Check(
        cid,
        FAIL,
        reason,
        f"PCR{e.pcr} event {e.index} ({event_type_name(e.event_type)}): digest "
        f"{digest.hex()[:16]}… is neither approved for PCR{e.pcr} by {in_force} nor a "
        "spec-defined value",
        e.pcr,
        e.index,
        got=digest.hex(),
        expected=f"a digest approved for PCR{e.pcr} or fixed by the PC Client profile",
    )


def _revoked(
    e: Event, digest: bytes, by: tuple[tuple[str, str], ...], policy: CompiledPolicy
) -> Check:
    """A digest only revoked sets approve: the node booted a component of a revoked version."""
    why = {ref: reason for ref, _, reason in policy.not_in_force}
    sets = "; ".join(
        dict.fromkeys(
            f"{ref} ({label}), revoked: {why.get(ref) or 'no reason given'}" for ref, label in by
        )
    )
    return Check(
        "events.accounted",
        FAIL,
        "golden_revoked",
        f"PCR{e.pcr} event {e.index} ({event_type_name(e.event_type)}): digest "
        f"{digest.hex()[:16]}… is approved only by {sets}",
        e.pcr,
        e.index,
        got=digest.hex(),
        golden=", ".join(dict.fromkeys(ref for ref, _ in by)),
    )


def _open_events(
    vlog: BootLog,
    facts: BootFacts,
    policy: CompiledPolicy,
    ledger: Ledger,
    pcrs: frozenset[int],
) -> Iterator[Event]:
    """Events of ``pcrs`` that nothing accounts for (steps 1–4 of the module docstring).

    2. and 3. for each PCR's distinct digests at once, by a set difference; 1. a digest is
    settled when the checks judged every event carrying it; only what is left is looked at event
    by event (4.). An event without a digest in the bank (None) is never accounted for."""
    bank = vlog.bank
    judged = ledger.pairs
    values = vlog.pcrs
    for pcr, counts in sorted(extended_digests(vlog, facts, pcrs).items()):
        for digest in policy.unaccepted(bank, pcr, values.get(pcr), counts):
            if judged.get((pcr, digest), 0) == counts[digest]:
                continue
            for e in facts.in_pcr(pcr):
                if (
                    e.digests.get(bank) == digest
                    and e.index not in ledger.taken
                    and (digest is None or not _content_approved(vlog, e, policy))
                ):
                    yield e


def unaccounted(
    vlog: BootLog,
    facts: BootFacts,
    policy: CompiledPolicy,
    ledger: Ledger,
    pcrs: frozenset[int],
) -> list[Event]:
    """Events of ``pcrs`` that nothing accounts for, in log order."""
    return sorted(_open_events(vlog, facts, policy, ledger, pcrs), key=_INDEX)


def check_closed_world(
    vlog: BootLog, facts: BootFacts, policy: CompiledPolicy, ledger: Ledger
) -> list[Check]:
    """Every event of every relied-on PCR accounted for (steps 1–4 of the module docstring)."""
    relied = policy.relied_pcrs
    if not relied:
        return []
    out: list[Check] = []
    unvouched = vlog.unvouched(relied)
    if unvouched:
        out.extend(
            Check(
                f"pcr{pcr}.quoted",
                UNKNOWN,
                "pcr_not_quoted",
                f"PCR{pcr} is relied on by the golden sets but not quoted",
                pcr,
            )
            for pcr in sorted(unvouched - policy.required_pcrs)
        )
    bank = vlog.bank
    for e in unaccounted(vlog, facts, policy, ledger, relied):
        digest = e.digests.get(bank)
        if digest is None:
            out.append(
                Check(
                    "events.accounted",
                    FAIL,
                    "digest_missing",
                    f"PCR{e.pcr} event {e.index} ({event_type_name(e.event_type)}): no "
                    f"{bank.bank} digest",
                    e.pcr,
                    e.index,
                )
            )
        else:
            out.append(_unaccounted(e, bank, digest, policy))
    if not any(c.status == FAIL for c in out):
        out.append(_all_accounted(relied))
    return out


@functools.lru_cache(maxsize=256)
def _all_accounted(relied: frozenset[int]) -> Check:
    pcrs = ", ".join(map(str, sorted(relied)))
    return Check(
        "events.accounted",
        PASS,
        "ok",
        f"every event in the relied-on PCRs ({pcrs}) is accounted for",
    )
