"""Appraisal: a verified boot log and compiled golden sets in, a verdict out. Pure, no I/O.

``compile_golden(sets, now=…)`` builds the lookup tables once; ``appraise(vlog, policy)`` runs:

1. policy in force (an empty policy can never yield *trusted*);
2. log structure: event types per PCR, retyped separators, data covered by digests;
3. separators in PCR0–7 and what follows them; PCRs extended outside the log;
4. required events (firmware, ExitBootServices) and required quoted PCRs; bank;
5. firmware values (S-CRTM version, firmware blobs, pinned PCRs);
6. Secure Boot (state, PK/KEK, db/dbx contents, debug mode, DMA protection);
7. boot applications (PCR4) and drivers (PCR2), boot order;
8. kernel command line, initrd, MokList/MokListX, SbatLevel;
9. workarounds that were needed, listed so the reviewer sees them.
"""

from __future__ import annotations

from assay.eventlog import VerifiedBootLog

from ._structure import check_required, check_separators, check_types
from ._values import check_boot_apps, check_firmware, check_os, check_secure_boot
from .facts import extract
from .policy import CompiledPolicy, compile_golden
from .verdict import Check, Verdict

__all__ = ["Check", "CompiledPolicy", "Verdict", "appraise", "compile_golden"]


def appraise(vlog: VerifiedBootLog, policy: CompiledPolicy) -> Verdict:
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
                "unknown",
                "no_golden_set_in_force",
                "no golden set is in force" + (f": {dead}" if dead else ""),
            )
        )
    else:
        checks.append(
            Check(
                "policy.golden_sets",
                "pass",
                "ok",
                f"{len(policy.in_force)} golden set(s) in force",
                golden=", ".join(policy.in_force),
            )
        )
    facts = extract(vlog)
    checks += check_types(vlog, facts, policy)  # 2.
    checks += check_separators(vlog, facts, policy)  # 3.
    checks += check_required(vlog, facts, policy)  # 4.
    checks += check_firmware(vlog, facts, policy)  # 5.
    checks += check_secure_boot(vlog, facts, policy)  # 6.
    checks += check_boot_apps(vlog, facts, policy)  # 7.
    checks += check_os(vlog, facts, policy)  # 8.
    for w in vlog.workarounds:  # 9.
        checks.append(
            Check(
                f"workaround.{w.workaround.name}",
                "pass",
                "workaround_applied",
                w.detail,
                w.pcr,
                w.event,
            )
        )
    return Verdict.of(checks)
