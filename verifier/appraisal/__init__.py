"""Appraisal: a verified boot log and compiled golden sets in, a verdict out. Pure, no I/O.

``compile_golden(sets, now=…)`` builds the lookup tables once; ``appraise(vlog, policy)`` runs:

1. policy in force (an empty policy can never yield *trusted*);
2. log structure: event types per PCR, retyped separators, data covered by digests;
3. separators in PCR0–7 and what follows them; PCRs extended outside the log;
4. required events (firmware, ExitBootServices) and required quoted PCRs; bank;
5. firmware values (S-CRTM version, firmware blobs and that they are all there, pinned PCRs);
6. Secure Boot (state, PK/KEK, db/dbx contents, authorities, debug mode, DMA protection);
7. boot applications (PCR4) and drivers (PCR2), at least one, boot order with every stage;
8. kernel command line, initrd, MokList/MokListX, SbatLevel — each present when pinned;
9. workarounds that were needed, each its own check (a failure where a set denies it);
10. the closed world: every event of every relied-on PCR accounted for (``_ledger``).

Steps 5–8 read values only from data the digest covers and judge boot applications, blobs,
initrds and MokLists by digest; each event they judge is marked in a ledger, and step 10 makes
every other event of a relied-on PCR answer to an approved or spec-fixed digest.
"""

from __future__ import annotations

from assay.bootfacts import BootFacts, extract
from assay.eventlog import AppliedWorkaround, BootLog, Event

from ._ledger import Ledger, check_closed_world, unaccounted
from ._structure import check_required, check_separators, check_types
from ._values import check_boot_apps, check_firmware, check_os, check_secure_boot
from .policy import CompiledPolicy, compile_golden
from .verdict import (
    FAIL,
    PASS,
    UNKNOWN,
    Check,
    CheckStatus,
    Verdict,
    VerdictStatus,
    booted_versions,
    booted_versions_of_json,
)

__all__ = [
    "Check",
    "CheckStatus",
    "CompiledPolicy",
    "Verdict",
    "VerdictStatus",
    "appraise",
    "booted_versions",
    "booted_versions_of_json",
    "compile_golden",
    "unaccounted_events",
]


def appraise(vlog: BootLog, policy: CompiledPolicy) -> Verdict:
    """Every check in order; trusted only if all pass (see the module docstring for the steps)."""
    checks: list[Check] = []
    # 1. Policy in force.
    if policy.empty:
        dead = "; ".join(
            f"{ref} is {status}" + (f" ({why})" if why else "")
            for ref, status, why in policy.not_in_force
        )
        checks.append(
            Check(
                "policy.golden_sets",
                UNKNOWN,
                "no_golden_set_in_force",
                "no golden set is in force" + (f": {dead}" if dead else ""),
            )
        )
    else:
        checks.append(
            Check(
                "policy.golden_sets",
                PASS,
                "ok",
                f"{len(policy.in_force)} golden set(s) in force",
                golden=", ".join(policy.in_force),
            )
        )
    facts = extract(vlog)
    ledger = Ledger(vlog.bank)
    checks += _judged(vlog, facts, policy, ledger)
    checks += check_closed_world(vlog, facts, policy, ledger)  # 10.
    return Verdict.of(checks)


def _judged(vlog: BootLog, facts: BootFacts, policy: CompiledPolicy, ledger: Ledger) -> list[Check]:
    """Steps 2–9; every event a value check judges is marked in ``ledger``."""
    checks: list[Check] = []
    checks += check_types(vlog, facts, policy)  # 2.
    checks += check_separators(vlog, facts, policy)  # 3.
    checks += check_required(vlog, facts, policy)  # 4.
    checks += check_firmware(vlog, facts, policy, ledger)  # 5.
    checks += check_secure_boot(vlog, facts, policy, ledger)  # 6.
    checks += check_boot_apps(vlog, facts, policy, ledger)  # 7.
    checks += check_os(vlog, facts, policy, ledger)  # 8.
    checks += _workaround_checks((*vlog.workarounds, *facts.workarounds), policy)  # 9.
    return checks


def unaccounted_events(vlog: BootLog, policy: CompiledPolicy, pcrs: frozenset[int]) -> list[Event]:
    """The events of ``pcrs`` that ``policy`` does not account for (``golden.capture`` adds them)."""
    ledger = Ledger(vlog.bank)
    facts = extract(vlog)
    _judged(vlog, facts, policy, ledger)
    return unaccounted(vlog, facts, policy, ledger, pcrs)


def _workaround_checks(used: tuple[AppliedWorkaround, ...], policy: CompiledPolicy) -> list[Check]:
    """One check per use: replay ones from verify_log, coverage ones met during extraction (the
    table's coverage entries touch only PCR1/PCR7 events, all of which extraction visits)."""
    out: list[Check] = []
    for w in used:
        name = w.workaround.name
        where = f"PCR{w.pcr} event{'s' if len(w.events) > 1 else ''} " + (
            ", ".join(map(str, w.events or (w.event,)))
        )
        denied = policy.denied_workarounds.get(name)
        out.append(
            Check(
                f"workaround.{name}", FAIL, "workaround_denied",
                f"{where}: needs workaround {name} ({w.workaround.summary}), which "
                f"{', '.join(denied)} den{'y' if len(denied) > 1 else 'ies'}: {w.detail}",
                w.pcr, w.event, golden=", ".join(denied),
            )
            if denied
            else Check(
                f"workaround.{name}", PASS, "workaround_applied",
                f"{where}: {w.detail} ({w.workaround.reference})", w.pcr, w.event,
            )
        )  # fmt: skip
    return out
