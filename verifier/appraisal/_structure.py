"""Checks on the shape of the log that hold whatever the golden values are (MISSION attacks 4–8)."""

from __future__ import annotations

import functools
import operator

from assay.algorithms import HashAlg
from assay.bootfacts import BootFacts, where
from assay.eventlog import BootLog, Event
from assay.events import EventType as ET
from assay.pcclient import EBS_INVOCATION, separator_digests

from .policy import CompiledPolicy
from .verdict import FAIL, PASS, UNKNOWN, Check

_INDEX = operator.itemgetter(0)  # Event.index


def check_types(vlog: BootLog, facts: BootFacts, policy: CompiledPolicy) -> list[Check]:
    """1. every event's type is allowed in its PCR; 2. no separator digest under another type;
    3. the digest covers the data wherever the spec says it must."""
    out: list[Check] = []
    allowed = policy.allowed_types
    for e in facts.events_not_in(allowed):
        out.append(
            Check(
                "events.type_allowed",
                FAIL,
                "event_type_not_allowed",
                f"{where(e)}: event type not allowed in PCR{e.pcr}",
                e.pcr,
                e.index,
                got=e.type_name,
            )
        )
    sep = separator_digests(vlog.bank)
    for e in facts.suspicious:
        if e.pcr <= 7 and e.event_type != ET.EV_SEPARATOR and e.digests.get(vlog.bank) in sep:
            out.append(
                Check(
                    "events.separator_retyped",
                    FAIL,
                    "separator_digest_retyped",
                    f"{where(e)}: carries a separator digest under another type",
                    e.pcr,
                    e.index,
                    got=e.type_name,
                    expected="EV_SEPARATOR",
                )
            )
        if vlog.data_covered(e) is False:
            out.append(
                Check(
                    "events.data_covered",
                    FAIL,
                    "event_data_not_covered",
                    f"{where(e)}: the event data does not hash to its digest",
                    e.pcr,
                    e.index,
                    got=e.digests.get(vlog.bank, b"").hex(),
                )
            )
    if not out:
        out.append(
            Check(
                "events.structure",
                PASS,
                "ok",
                f"{len(vlog.events)} events: types allowed, data covered",
            )
        )
    return out


def _separator_pcr(
    pcr: int, events: list[Event], positions: list[int], after: frozenset[int], odd: list[Event]
) -> list[Check]:
    if len(positions) == 1 and not odd:  # the usual case: one separator, nothing odd
        at = positions[0]
        if all(e.event_type in after for e in events[at + 1 :]):
            return [_one_separator(pcr, events[at].index)]
    seps = [events[i] for i in positions]
    cid = f"pcr{pcr}.separator"
    if not seps:
        return [Check(cid, FAIL, "separator_missing", f"PCR{pcr}: no EV_SEPARATOR", pcr)]
    if len(seps) > 1:
        return [
            Check(
                cid,
                FAIL,
                "separator_duplicate",
                f"PCR{pcr}: {len(seps)} separators (events {', '.join(str(e.index) for e in seps)})",
                pcr,
                seps[1].index,
                got=str(len(seps)),
                expected="1",
            )
        ]
    sep = seps[0]
    if not odd and all(e.event_type in after for e in events[positions[0] + 1 :]):
        return [_one_separator(pcr, sep.index)]  # the usual case
    out = [
        Check(
            cid,
            FAIL,
            "separator_value",
            f"{where(e)}: an EV_SEPARATOR whose digest is not a separator value's",
            pcr,
            e.index,
            got=e.data.hex()[:64],
            expected="00000000 or ffffffff",
        )
        for e in odd
        if e.pcr == pcr
    ]
    out += [
        Check(
            cid,
            FAIL,
            "event_after_separator",
            f"{where(e)}: not allowed after the separator",
            pcr,
            e.index,
            got=e.type_name,
        )
        for e in events[positions[0] + 1 :]
        if e.event_type not in after
    ]
    return out or [_one_separator(pcr, sep.index)]


@functools.lru_cache(maxsize=1024)
def _one_separator(pcr: int, index: int) -> Check:
    """The pass check (immutable, so one object serves every log with the separator there)."""
    return Check(f"pcr{pcr}.separator", PASS, "ok", f"PCR{pcr}: one separator", pcr, index)


_PCR0_7 = frozenset(range(8))


def check_separators(vlog: BootLog, facts: BootFacts, policy: CompiledPolicy) -> list[Check]:
    """4. exactly one separator (its type and its digest say so) in each of PCR0–7, nothing
    wrong after it."""
    out: list[Check] = []
    unvouched = vlog.unvouched(_PCR0_7)
    for pcr in range(8):
        if pcr in unvouched:
            out.append(
                Check(
                    f"pcr{pcr}.separator",
                    UNKNOWN,
                    "pcr_not_quoted",
                    f"PCR{pcr} is not quoted",
                    pcr,
                )
            )
            continue
        out.extend(
            _separator_pcr(
                pcr,
                facts.by_pcr.get(pcr, []),
                facts.separators.get(pcr, []),
                policy.after_separator[pcr],
                facts.odd_separators,
            )
        )
        if pcr in vlog.pcrs_outside_log:
            out.append(
                Check(
                    f"pcr{pcr}.outside_log",
                    FAIL,
                    "pcr_extended_outside_log",
                    f"PCR{pcr} was extended by something that did not log it",
                    pcr,
                    got=vlog.pcrs[pcr].hex(),
                )
            )
    return out


def check_required(vlog: BootLog, facts: BootFacts, policy: CompiledPolicy) -> list[Check]:
    """5. firmware events in PCR0; ExitBootServices where a set requires it; nothing measured into
    PCR0–7 after it; every PCR the sets require is quoted."""
    out: list[Check] = []
    if not facts.scrtm_versions and not facts.firmware_code:
        out.append(
            Check(
                "firmware.events",
                FAIL,
                "firmware_events_missing",
                "PCR0 has no S-CRTM or platform firmware events",
                0,
            )
        )
    if policy.require_ebs_by:
        invoked = [e for e, action in facts.ebs_events if action == EBS_INVOCATION]
        if not invoked:
            out.append(
                Check(
                    "boot.exit_boot_services",
                    FAIL,
                    "exit_boot_services_missing",
                    "no 'Exit Boot Services Invocation' event in PCR5",
                    5,
                    golden=policy.require_ebs_by[0],
                )
            )
        else:
            ebs_ids = {e.index for e, _ in facts.ebs_events}
            first = invoked[0].index
            late = sorted(
                (
                    e
                    for events in facts.by_pcr.values()  # PCR0–7
                    for e in events
                    if e.index > first and e.index not in ebs_ids
                ),
                key=_INDEX,
            )
            out.extend(
                Check(
                    "boot.exit_boot_services",
                    FAIL,
                    "event_after_exit_boot_services",
                    f"{where(e)}: measured after ExitBootServices",
                    e.pcr,
                    e.index,
                    got=e.type_name,
                )
                for e in late
            )
    for pcr in sorted(policy.required_pcrs):
        if pcr not in vlog.pcrs:
            out.append(
                Check(
                    f"pcr{pcr}.quoted",
                    UNKNOWN,
                    "pcr_not_quoted",
                    f"PCR{pcr} is required by the golden sets but not quoted",
                    pcr,
                )
            )
    if vlog.bank is HashAlg.SHA1 and not policy.sha1_refs:
        out.append(
            Check(
                "evidence.bank",
                FAIL,
                "sha1_not_allowed",
                "the log was verified in the SHA-1 bank, which no golden set allows",
                got="sha1",
                expected="sha256 or stronger",
            )
        )
    return out
