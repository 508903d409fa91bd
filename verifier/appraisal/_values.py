"""Checks of measured values against the compiled golden reference values."""

from __future__ import annotations

import functools

from assay.errors import MalformedEvidence
from assay.eventlog import Event, VerifiedBootLog
from assay.events import event_type_name

from .facts import DEBUG_MODE, DMA_DISABLED, BootFacts, signature_ids
from .policy import Approval, CompiledPolicy, Key, Refs
from .verdict import Check


def _where(e: Event) -> str:
    return f"PCR{e.pcr} event {e.index} ({event_type_name(e.event_type)})"


@functools.lru_cache(maxsize=4096)
def _refs(refs: Refs) -> str:
    """The sets that decided a check, each once (cached: the tuples come from the compiled policy)."""
    return ", ".join(dict.fromkeys(refs))


def _text_check(
    e: Event, text: str | None, table: dict[str, Refs], cid: str, what: str, pcr: int
) -> Check:
    """A value the log states as text (covered by its digest, else None) against approved texts."""
    refs = table.get(text) if text is not None else None
    if refs:
        return Check(
            cid, "pass", "ok", f"{_where(e)}: {what} {text!r}", pcr, e.index, got=text,
            golden=_refs(refs),
        )  # fmt: skip
    reason = cid.split(".", 1)[1] + "_not_approved"
    return Check(
        cid, "fail", reason, f"{_where(e)}: {what} {text!r} is not approved", pcr, e.index,
        got=text, expected=" | ".join(sorted(table))[:200],
    )  # fmt: skip


def _digest_missing(vlog: VerifiedBootLog, e: Event, cid: str) -> Check:
    """An event without a digest in the appraised bank: nothing about it can be approved."""
    return Check(
        cid, "fail", "digest_missing", f"{_where(e)}: no {vlog.bank.bank} digest", e.pcr, e.index
    )


def _digest_check(
    vlog: VerifiedBootLog, e: Event, table: dict[Key, Refs], cid: str, what: str, reason: str
) -> Check:
    digest = e.digests.get(vlog.bank)
    if digest is None:
        return _digest_missing(vlog, e, cid)
    refs = table.get((vlog.bank, digest))
    if refs:
        return Check(
            cid,
            "pass",
            "ok",
            f"{_where(e)}: approved {what}",
            e.pcr,
            e.index,
            got=digest.hex(),
            golden=_refs(refs),
        )
    return Check(
        cid,
        "fail",
        reason,
        f"{_where(e)}: {what} digest {digest.hex()[:16]}… is not approved",
        e.pcr,
        e.index,
        got=digest.hex(),
        expected=f"one of {len(table)} approved {what} digests",
    )


def check_firmware(vlog: VerifiedBootLog, facts: BootFacts, policy: CompiledPolicy) -> list[Check]:
    out: list[Check] = []
    if policy.scrtm:
        out.extend(
            _text_check(e, text, policy.scrtm, "firmware.scrtm_version", "S-CRTM version", 0)
            for e, text in facts.scrtm_versions
        )
    if policy.blobs:
        out.extend(
            _digest_check(
                vlog, e, policy.blobs, "firmware.blob", "firmware", "firmware_blob_not_approved"
            )
            for e in facts.firmware_code
        )
    for pcr, pins in sorted(policy.pcr_pins.items()):
        value = vlog.pcrs.get(pcr)
        expected = [v.hex() for (alg, v) in pins if alg == vlog.bank]
        cid = f"firmware.pcr{pcr}"
        if value is None or not expected:
            why = "pcr_not_quoted" if value is None else "no_reference_in_bank"
            out.append(
                Check(cid, "unknown", why, f"PCR{pcr}: cannot compare with the pinned value", pcr)
            )
            continue
        refs = pins.get((vlog.bank, value))
        out.append(
            Check(
                cid,
                "pass",
                "ok",
                f"PCR{pcr} equals the pinned value",
                pcr,
                got=value.hex(),
                golden=_refs(refs),
            )
            if refs
            else Check(
                cid,
                "fail",
                "pcr_value_mismatch",
                f"PCR{pcr} differs from the pinned value",
                pcr,
                got=value.hex(),
                expected=" | ".join(expected),
            )
        )
    return out


def _db_ids(facts: BootFacts, name: str) -> tuple[frozenset[str] | None, str | None]:
    var = facts.variables.get(name)
    if var is None:
        return frozenset(), None
    if var.value is None:
        return None, var.problem
    try:
        return signature_ids(var.value), None
    except MalformedEvidence as exc:
        return None, f"malformed {name}: {exc}"


def _secure_boot_state(facts: BootFacts, policy: CompiledPolicy) -> Check:
    var = facts.variables.get("SecureBoot")
    on = var is not None and var.value == b"\x01"
    event = var.event.index if var is not None else None
    got = "on" if on else ("unverifiable" if var is not None and var.value is None else "off")
    if on:
        return Check(
            "secure_boot.enabled",
            "pass",
            "ok",
            "Secure Boot is on",
            7,
            event,
            got=got,
            golden=_refs(policy.sb_required_by) or None,
        )
    if policy.sb_off_ok:
        return Check(
            "secure_boot.enabled",
            "pass",
            "secure_boot_off_allowed",
            f"Secure Boot is {got}, which a golden set allows",
            7,
            event,
            got=got,
            golden=_refs(policy.sb_off_ok),
        )
    return Check(
        "secure_boot.enabled",
        "fail",
        "secure_boot_disabled",
        f"Secure Boot is {got} but the golden sets require it",
        7,
        event,
        got=got,
        expected="on",
        golden=_refs(policy.sb_required_by) or None,
    )


def _key_check(facts: BootFacts, name: str, table: dict[str, Refs]) -> Check:
    ids, problem = _db_ids(facts, name)
    cid = f"secure_boot.{name.lower()}"
    if ids is None:
        return Check(cid, "fail", "secure_boot_variable_unverifiable", f"{name}: {problem}", 7)
    bad = sorted(i for i in ids if i not in table)
    if bad:
        return Check(
            cid,
            "fail",
            f"{name.lower()}_not_approved",
            f"{name} holds {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} no golden set allows",
            7,
            got=", ".join(bad),
            expected=" | ".join(sorted(table)) or "(none)",
        )
    refs = tuple(r for i in ids for r in table[i])
    return Check(cid, "pass", "ok", f"{name}: {len(ids)} approved entries", 7, golden=_refs(refs))


def _contains(
    facts: BootFacts, name: str, required: tuple[tuple[str, frozenset[str]], ...]
) -> Check:
    ids, problem = _db_ids(facts, name)
    cid = f"secure_boot.{name}_contains"
    if ids is None:
        return Check(cid, "fail", "secure_boot_variable_unverifiable", f"{name}: {problem}", 7)
    best: list[str] = []
    for ref, need in required:
        missing = need - ids
        if not missing:
            return Check(
                cid, "pass", "ok", f"{name} holds the {len(need)} required entries", 7, golden=ref
            )
        if not best or len(missing) < len(best):
            best = sorted(missing)
    return Check(
        cid,
        "fail",
        f"{name}_missing_entries",
        f"{name} lacks {len(best)} required entries",
        7,
        got=f"{len(ids)} entries",
        expected=", ".join(best[:20]),
    )


def check_secure_boot(
    vlog: VerifiedBootLog, facts: BootFacts, policy: CompiledPolicy
) -> list[Check]:
    out = [_secure_boot_state(facts, policy)]
    if policy.pk is not None:
        out.append(_key_check(facts, "PK", policy.pk))
    if policy.kek is not None:
        out.append(_key_check(facts, "KEK", policy.kek))
    if policy.db_required:
        out.append(_contains(facts, "db", policy.db_required))
    if policy.dbx_required:
        out.append(_contains(facts, "dbx", policy.dbx_required))
    for e, data in facts.pcr7_actions:
        for marker, ok, cid, reason in (
            (DEBUG_MODE, policy.debug_ok, "platform.debug_mode", "uefi_debug_mode"),
            (DMA_DISABLED, policy.dma_ok, "platform.dma_protection", "dma_protection_disabled"),
        ):
            if data is not None and data.rstrip(b"\x00") == marker:
                out.append(
                    Check(
                        cid,
                        "pass",
                        "allowed",
                        f"{_where(e)}: {marker.decode()} (allowed)",
                        7,
                        e.index,
                        golden=_refs(ok),
                    )
                    if ok
                    else Check(
                        cid,
                        "fail",
                        reason,
                        f"{_where(e)}: {marker.decode()}",
                        7,
                        e.index,
                        got=marker.decode(),
                        expected="absent",
                    )
                )
    return out


def _app_check(
    vlog: VerifiedBootLog, e: Event, policy: CompiledPolicy, cid: str
) -> tuple[Check, Approval | None]:
    digest = e.digests.get(vlog.bank)
    if digest is None:
        return _digest_missing(vlog, e, cid), None
    found = policy.boot_apps.get((vlog.bank, digest))
    if found:
        a = found[0]
        return Check(
            cid,
            "pass",
            "ok",
            f"{_where(e)}: {a.label}",
            e.pcr,
            e.index,
            got=digest.hex(),
            expected=a.label,
            golden=_refs(tuple(x.ref for x in found)),
        ), a
    dead = policy.inactive_apps.get((vlog.bank, digest))
    if dead:
        a = next((x for x in dead if x.status == "revoked"), dead[0])
        # Every set that would have approved it, each with why it no longer does.
        approvers = "; ".join(
            dict.fromkeys(
                f"{x.ref} ({x.status}{': ' + x.reason if x.reason else ''})" for x in dead
            )
        )
        return Check(
            cid,
            "fail",
            f"boot_app_{a.status}",
            f"{_where(e)}: {a.label} is approved only by sets no longer in force: {approvers}",
            e.pcr,
            e.index,
            got=digest.hex(),
            expected=a.label,
            golden=_refs(tuple(x.ref for x in dead)),
        ), None
    in_force = ", ".join(policy.in_force) or "no golden set in force"
    return Check(
        cid,
        "fail",
        "boot_app_not_approved",
        f"{_where(e)}: digest {digest.hex()[:16]}… matches no approved boot application "
        f"in {in_force}",
        e.pcr,
        e.index,
        got=digest.hex(),
        expected=f"one of {len(policy.boot_apps)} approved digests",
    ), None


def _order_ok(roles: list[str], order: tuple[str, ...]) -> bool:
    rank = {r: i for i, r in enumerate(order)}
    last = -1
    for role in roles:
        if role in rank:
            if rank[role] < last:
                return False
            last = rank[role]
    return True


def check_boot_apps(vlog: VerifiedBootLog, facts: BootFacts, policy: CompiledPolicy) -> list[Check]:
    if not policy.apps_enabled:
        return []
    out: list[Check] = []
    roles: list[str] = []
    for e in facts.boot_apps:
        check, approval = _app_check(vlog, e, policy, "boot.app")
        out.append(check)
        if approval is not None:
            roles.append(approval.role)
    for e in facts.drivers:
        out.append(_app_check(vlog, e, policy, "firmware.driver")[0])
    if policy.boot_orders:
        ok = [ref for ref, order in policy.boot_orders if _order_ok(roles, order)]
        out.append(
            Check(
                "boot.order",
                "pass",
                "ok",
                "boot chain order as approved",
                4,
                got=" → ".join(roles),
                golden=_refs(tuple(ok)),
            )
            if ok
            else Check(
                "boot.order",
                "fail",
                "boot_order_wrong",
                "boot applications ran out of order",
                4,
                got=" → ".join(roles),
                expected=" → ".join(policy.boot_orders[0][1]),
            )
        )
    return out


def check_os(vlog: VerifiedBootLog, facts: BootFacts, policy: CompiledPolicy) -> list[Check]:
    out: list[Check] = []
    if policy.cmdline_exact or policy.cmdline_regex:
        if not facts.cmdlines:
            out.append(
                Check(
                    "kernel.cmdline",
                    "fail",
                    "cmdline_not_measured",
                    "no kernel command line was measured",
                    8,
                )
            )
        for e, text in facts.cmdlines:
            out.append(_cmdline(e, text, policy))
    if policy.initrds:
        if not facts.initrds:
            out.append(
                Check("kernel.initrd", "fail", "initrd_not_measured", "no initrd was measured", 9)
            )
        out.extend(
            _digest_check(vlog, e, policy.initrds, "kernel.initrd", "initrd", "initrd_not_approved")
            for e in facts.initrds
        )
    for name, table in sorted(policy.moklist.items()):
        out.extend(
            _digest_check(
                vlog, e, table, f"shim.{name.lower()}", name, f"{name.lower()}_not_approved"
            )
            for e in facts.moklists.get(name, [])
        )
    if policy.sbat_levels:
        out.extend(
            _text_check(e, text, policy.sbat_levels, "shim.sbat_level", "SbatLevel", 7)
            for e, text in facts.sbat_levels
        )
    return out


def _cmdline(e: Event, text: str | None, policy: CompiledPolicy) -> Check:
    if text is None:
        return Check(
            "kernel.cmdline",
            "fail",
            "cmdline_not_covered",
            f"{_where(e)}: command line not covered by its digest",
            e.pcr,
            e.index,
        )
    refs = policy.cmdline_exact.get(text)
    if refs:
        return Check(
            "kernel.cmdline",
            "pass",
            "ok",
            f"{_where(e)}: exact match",
            e.pcr,
            e.index,
            got=text,
            golden=_refs(refs),
        )
    for pattern, source, ref in policy.cmdline_regex:
        if pattern.fullmatch(text):
            return Check(
                "kernel.cmdline",
                "pass",
                "ok",
                f"{_where(e)}: matches {source}",
                e.pcr,
                e.index,
                got=text,
                expected=source,
                golden=ref,
            )
    expected = [*policy.cmdline_exact, *(src for _, src, _ in policy.cmdline_regex)]
    return Check(
        "kernel.cmdline",
        "fail",
        "cmdline_not_approved",
        f"{_where(e)}: kernel command line is not approved",
        e.pcr,
        e.index,
        got=text,
        expected=" | ".join(expected)[:500],
    )
