"""Checks of measured values against the compiled golden reference values."""

from __future__ import annotations

import functools

from assay.bootfacts import (
    BootFacts,
    Variable,
    authority_in,
    load_options_forms,
    signature_database,
    where,
)
from assay.errors import MalformedEvidence
from assay.eventlog import BootLog, Event
from assay.pcclient import DEBUG_MODE
from assay.uefi.sigdb import RequiredIds, SignatureDatabase

from ._ledger import Ledger
from .lsm import check_lsm_cmdline
from .policy import Approval, CompiledPolicy, Key, Refs
from .verdict import FAIL, PASS, UNKNOWN, Check


@functools.lru_cache(maxsize=4096)
def _refs(refs: Refs) -> str:
    """The sets that decided a check, each once (cached: the tuples come from the compiled policy)."""
    return ", ".join(dict.fromkeys(refs))


def _text_check(
    e: Event,
    text: str | None,
    table: dict[str, Refs],
    cid: str,
    what: str,
    pcr: int,
    policy: CompiledPolicy,
) -> Check:
    key = ("text", cid, e.pcr, e.index, e.event_type, text)
    return policy.remember(key, lambda: _judge_text(e, text, table, cid, what, pcr))


def _judge_text(
    e: Event, text: str | None, table: dict[str, Refs], cid: str, what: str, pcr: int
) -> Check:
    """A value the log states as text (covered by its digest, else None) against approved texts."""
    refs = table.get(text) if text is not None else None
    if refs:
        return Check(
            cid, PASS, "ok", f"{where(e)}: {what} {text!r}", pcr, e.index, got=text,
            golden=_refs(refs),
        )  # fmt: skip
    reason = cid.split(".", 1)[1] + "_not_approved"
    return Check(
        cid, FAIL, reason, f"{where(e)}: {what} {text!r} is not approved", pcr, e.index,
        got=text, expected=" | ".join(sorted(table))[:200],
    )  # fmt: skip


def _digest_missing(vlog: BootLog, e: Event, cid: str) -> Check:
    """An event without a digest in the appraised bank: nothing about it can be approved."""
    return Check(
        cid, FAIL, "digest_missing", f"{where(e)}: no {vlog.bank.bank} digest", e.pcr, e.index
    )


def _digest_check(
    vlog: BootLog,
    e: Event,
    table: dict[Key, Refs],
    cid: str,
    what: str,
    reason: str,
    policy: CompiledPolicy,
) -> Check:
    key = ("digest", cid, vlog.bank, e.pcr, e.index, e.event_type, e.digests.get(vlog.bank))
    return policy.remember(key, lambda: _judge_digest(vlog, e, table, cid, what, reason, policy))


def _judge_digest(
    vlog: BootLog,
    e: Event,
    table: dict[Key, Refs],
    cid: str,
    what: str,
    reason: str,
    policy: CompiledPolicy,
) -> Check:
    """The event's digest against ``table``, else against anything approved for its PCR (the type
    only chose which list to show it against)."""
    digest = e.digests.get(vlog.bank)
    if digest is None:
        return _digest_missing(vlog, e, cid)
    refs = table.get((vlog.bank, digest))
    if not refs:
        refs = tuple(ref for ref, _ in policy.approved.get((e.pcr, vlog.bank, digest), ()))
    if refs:
        return Check(
            cid,
            PASS,
            "ok",
            f"{where(e)}: approved {what}",
            e.pcr,
            e.index,
            got=digest.hex(),
            golden=_refs(refs),
        )
    return Check(
        cid,
        FAIL,
        reason,
        f"{where(e)}: {what} digest {digest.hex()[:16]}… is not approved",
        e.pcr,
        e.index,
        got=digest.hex(),
        expected=f"one of {len(table)} approved {what} digests",
    )


def check_firmware(
    vlog: BootLog, facts: BootFacts, policy: CompiledPolicy, ledger: Ledger
) -> list[Check]:
    out: list[Check] = []
    if policy.scrtm:
        for e, text in facts.scrtm_versions:
            ledger.take(e)
            out.append(
                _text_check(
                    e, text, policy.scrtm, "firmware.scrtm_version", "S-CRTM version", 0, policy
                )
            )
        if not any(t in policy.scrtm for _, t in facts.scrtm_versions if t is not None):
            out.append(
                Check(
                    "firmware.scrtm_version",
                    FAIL,
                    "scrtm_version_missing",
                    "no approved S-CRTM version is measured (covered by its digest) in PCR0",
                    0,
                    expected=" | ".join(sorted(policy.scrtm))[:200],
                )
            )
    if policy.blobs:
        for e in facts.firmware_code:
            ledger.take(e)
            out.append(
                _digest_check(
                    vlog,
                    e,
                    policy.blobs,
                    "firmware.blob",
                    "firmware",
                    "firmware_blob_not_approved",
                    policy,
                )
            )
        out.extend(_blobs_present(vlog, facts, policy))
    for pcr, pins in sorted(policy.pcr_pins.items()):
        value = vlog.pcrs.get(pcr)
        expected = [v.hex() for (alg, v) in pins if alg == vlog.bank]
        cid = f"firmware.pcr{pcr}"
        if value is None or not expected:
            why = "pcr_not_quoted" if value is None else "no_reference_in_bank"
            out.append(
                Check(cid, UNKNOWN, why, f"PCR{pcr}: cannot compare with the pinned value", pcr)
            )
            continue
        refs = pins.get((vlog.bank, value))
        out.append(
            Check(
                cid,
                PASS,
                "ok",
                f"PCR{pcr} equals the pinned value",
                pcr,
                got=value.hex(),
                golden=_refs(refs),
            )
            if refs
            else Check(
                cid,
                FAIL,
                "pcr_value_mismatch",
                f"PCR{pcr} differs from the pinned value",
                pcr,
                got=value.hex(),
                expected=" | ".join(expected),
            )
        )
    return out


def _blobs_present(vlog: BootLog, facts: BootFacts, policy: CompiledPolicy) -> list[Check]:
    """A set's firmware blobs are all measured in PCR0 (by digest) for at least one set."""
    bank = vlog.bank
    measured = {(bank, e.digests.get(bank)) for e in facts.by_pcr.get(0, ())}
    best: tuple[str, int] | None = None
    for ref, keys in policy.blob_sets:
        mine = [k for k in keys if k[0] == vlog.bank]
        missing = sum(1 for k in mine if k not in measured)
        if mine and not missing:
            return []
        if mine and (best is None or missing < best[1]):
            best = (ref, missing)
    if best is None:
        return [
            Check(
                "firmware.blobs_present",
                UNKNOWN,
                "no_reference_in_bank",
                f"no golden set pins firmware blobs in the {vlog.bank.bank} bank",
                0,
            )
        ]
    return [
        Check(
            "firmware.blobs_present",
            FAIL,
            "firmware_blob_missing",
            f"{best[1]} firmware blob(s) pinned by {best[0]} are not measured in PCR0",
            0,
            golden=best[0],
        )
    ]


def _db_ids(facts: BootFacts, name: str) -> tuple[frozenset[str] | None, str | None]:
    """Entries of the covered measurements of ``name``, all of them together (a key check must
    approve each). None and why when one is malformed."""
    sets = []
    for v in facts.variables.get(name, []):
        db, problem = _database(name, v)
        if db is None:
            return None, problem
        sets.append(db.ids)
    if len(sets) == 1:  # the usual case: one measurement
        return sets[0], None
    return frozenset().union(*sets), None


def _database(name: str, v: Variable) -> tuple[SignatureDatabase, None] | tuple[None, str]:
    """The checked database of one measurement of ``name``, else None and why."""
    try:
        return signature_database(v.value), None
    except MalformedEvidence as exc:
        return None, f"malformed {name} (event {v.event.index}): {exc}"


def _secure_boot_state(facts: BootFacts, policy: CompiledPolicy, ledger: Ledger) -> Check:
    found = facts.variables.get("SecureBoot", [])
    for v in found:
        ledger.take(v.event)
    on = bool(found) and all(v.value == b"\x01" for v in found)
    event = found[0].event.index if found else None
    got = (
        "on"
        if on
        else ("inconsistent" if found and any(v.value == b"\x01" for v in found) else "off")
    )
    return policy.remember(("sb", got, event), lambda: _judge_state(policy, on, got, event))


def _judge_state(policy: CompiledPolicy, on: bool, got: str, event: int | None) -> Check:
    if on:
        return Check(
            "secure_boot.enabled",
            PASS,
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
            PASS,
            "secure_boot_off_allowed",
            f"Secure Boot is {got}, which a golden set allows",
            7,
            event,
            got=got,
            golden=_refs(policy.sb_off_ok),
        )
    return Check(
        "secure_boot.enabled",
        FAIL,
        "secure_boot_disabled",
        f"Secure Boot is {got} but the golden sets require it",
        7,
        event,
        got=got,
        expected="on",
        golden=_refs(policy.sb_required_by) or None,
    )


def _take_variable(facts: BootFacts, name: str, ledger: Ledger) -> None:
    for v in facts.variables.get(name, []):
        ledger.take(v.event)


def _key_check(
    facts: BootFacts, name: str, table: dict[str, Refs], ledger: Ledger, policy: CompiledPolicy
) -> Check:
    _take_variable(facts, name, ledger)
    ids, problem = _db_ids(facts, name)
    cid = f"secure_boot.{name.lower()}"
    if ids is None:
        return Check(cid, FAIL, "secure_boot_variable_unverifiable", f"{name}: {problem}", 7)
    present = bool(facts.variables.get(name))
    return policy.remember(
        ("key", name, ids, present), lambda: _judge_key(cid, name, ids, present, table)
    )


def _judge_key(
    cid: str, name: str, ids: frozenset[str], present: bool, table: dict[str, Refs]
) -> Check:
    if not present and table:
        return Check(
            cid,
            FAIL,
            "secure_boot_variable_missing",
            f"{name} is pinned by the golden sets but no measurement of it is covered by its "
            "digest in PCR7",
            7,
            expected=" | ".join(sorted(table)),
        )
    bad = sorted(i for i in ids if i not in table)
    if bad:
        return Check(
            cid,
            FAIL,
            f"{name.lower()}_not_approved",
            f"{name} holds {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} no golden set allows",
            7,
            got=", ".join(bad),
            expected=" | ".join(sorted(table)) or "(none)",
        )
    refs = tuple(r for i in ids for r in table[i])
    return Check(cid, PASS, "ok", f"{name}: {len(ids)} approved entries", 7, golden=_refs(refs))


def _contains(
    facts: BootFacts,
    name: str,
    required: tuple[tuple[str, RequiredIds], ...],
    ledger: Ledger,
    policy: CompiledPolicy,
) -> Check:
    _take_variable(facts, name, ledger)
    cid = f"secure_boot.{name}_contains"
    dbs: list[SignatureDatabase] = []
    for v in facts.variables.get(name, []):
        db, problem = _database(name, v)
        if db is None:
            return Check(cid, FAIL, "secure_boot_variable_unverifiable", f"{name}: {problem}", 7)
        dbs.append(db)
    return policy.remember(
        ("contains", name, *dbs), lambda: _judge_contains(cid, name, dbs, required)
    )


def _judge_contains(
    cid: str,
    name: str,
    dbs: list[SignatureDatabase],
    required: tuple[tuple[str, RequiredIds], ...],
) -> Check:
    """A "must contain" check may rely only on entries in every measurement of the database:
    what one of them lacks is lacking (each compared by its entries' bytes, see ``lacks``)."""
    best: list[str] = []
    for ref, need in required:
        missing = frozenset().union(*(db.lacks(need) for db in dbs)) if dbs else need.ids
        if not missing:
            return Check(
                cid, PASS, "ok", f"{name} holds the {len(need)} required entries", 7, golden=ref
            )
        if not best or len(missing) < len(best):
            best = sorted(missing)
    held = frozenset.intersection(*(db.ids for db in dbs)) if dbs else frozenset()
    return Check(
        cid,
        FAIL,
        f"{name}_missing_entries",
        f"{name} lacks {len(best)} required entries",
        7,
        got=f"{len(held)} entries",
        expected=", ".join(best[:20]),
    )


def _authorities(facts: BootFacts, ledger: Ledger) -> None:
    """An EV_EFI_VARIABLE_AUTHORITY "db" entry is accounted for when the measured db holds it (an
    entry it does not hold, or a malformed one, is left to the closed-world check)."""
    if not facts.authorities:
        return
    ids, _ = _db_ids(facts, "db")
    if not ids:
        return
    # Every db measurement parsed (else ids is None): its certificates are validated.
    validated = frozenset().union(
        *(signature_database(v.value).certificates for v in facts.variables.get("db", []))
    )
    for e, value in facts.authorities:
        if authority_in(value, ids, validated):
            ledger.take(e)


def check_secure_boot(
    vlog: BootLog, facts: BootFacts, policy: CompiledPolicy, ledger: Ledger
) -> list[Check]:
    out = [_secure_boot_state(facts, policy, ledger)]
    if policy.pk is not None:
        out.append(_key_check(facts, "PK", policy.pk, ledger, policy))
    if policy.kek is not None:
        out.append(_key_check(facts, "KEK", policy.kek, ledger, policy))
    if policy.db_required:
        out.append(_contains(facts, "db", policy.db_required, ledger, policy))
    if policy.dbx_required:
        out.append(_contains(facts, "dbx", policy.dbx_required, ledger, policy))
    _authorities(facts, ledger)
    for e, marker in facts.platform_states:
        ledger.take(e)
        ok, cid, reason = (
            (policy.debug_ok, "platform.debug_mode", "uefi_debug_mode")
            if marker == DEBUG_MODE
            else (policy.dma_ok, "platform.dma_protection", "dma_protection_disabled")
        )
        out.append(
            Check(
                cid, PASS, "allowed", f"{where(e)}: {marker.decode()} (allowed)", 7, e.index,
                golden=_refs(ok),
            )
            if ok
            else Check(
                cid, FAIL, reason, f"{where(e)}: {marker.decode()}", 7, e.index,
                got=marker.decode(), expected="absent",
            )
        )  # fmt: skip
    return out


def _app_check(
    vlog: BootLog, e: Event, policy: CompiledPolicy, cid: str
) -> tuple[Check, Approval | None]:
    """The check of one boot application or driver (and its approval): a pure function of the
    policy and (bank, PCR, index, type, digest), so the policy keeps it for the next log."""
    digest = e.digests.get(vlog.bank)
    key = ("app", cid, vlog.bank, e.pcr, e.index, e.event_type, digest)
    return policy.remember(key, lambda: _judge_app(vlog, e, policy, cid))


def _judge_app(
    vlog: BootLog, e: Event, policy: CompiledPolicy, cid: str
) -> tuple[Check, Approval | None]:
    digest = e.digests.get(vlog.bank)
    if digest is None:
        return _digest_missing(vlog, e, cid), None
    found = policy.boot_apps.get((vlog.bank, digest))
    if found:
        a = found[0]
        return Check(
            cid,
            PASS,
            "ok",
            f"{where(e)}: {a.label}",
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
            FAIL,
            "golden_revoked" if a.status == "revoked" else f"boot_app_{a.status}",
            f"{where(e)}: {a.label} is approved only by sets no longer in force: {approvers}",
            e.pcr,
            e.index,
            got=digest.hex(),
            expected=a.label,
            golden=_refs(tuple(x.ref for x in dead)),
        ), None
    in_force = ", ".join(policy.in_force) or "no golden set in force"
    return Check(
        cid,
        FAIL,
        "boot_app_not_approved",
        f"{where(e)}: digest {digest.hex()[:16]}… matches no approved boot application "
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


def _app_events(vlog: BootLog, facts: BootFacts, policy: CompiledPolicy, pcr: int) -> list[Event]:
    """PCR2/PCR4 events judged as boot applications: every one whose digest an (active or inactive)
    set knows as one, whatever its type, and every one whose type claims to be one."""
    hinted = {e.index for e in (facts.boot_apps if pcr == 4 else facts.drivers)}
    known = policy.app_digests(vlog.bank)
    bank = vlog.bank
    return [
        e for e in facts.by_pcr.get(pcr, ()) if e.index in hinted or e.digests.get(bank) in known
    ]


def check_boot_apps(
    vlog: BootLog, facts: BootFacts, policy: CompiledPolicy, ledger: Ledger
) -> list[Check]:
    if not policy.apps_enabled:
        return []
    out: list[Check] = []
    roles: list[str] = []
    for e in _app_events(vlog, facts, policy, 4):
        ledger.take(e)
        check, approval = _app_check(vlog, e, policy, "boot.app")
        out.append(check)
        if approval is not None:
            roles.append(approval.role)
    for e in _app_events(vlog, facts, policy, 2):
        ledger.take(e)
        out.append(_app_check(vlog, e, policy, "firmware.driver")[0])
    if not roles and policy.in_force:
        out.append(
            Check(
                "boot.app",
                FAIL,
                "boot_app_missing",
                "no approved boot application is measured in PCR4",
                4,
                expected=f"one of {len(policy.boot_apps)} approved digests",
            )
        )
    if policy.boot_orders:
        out.append(_order_check(roles, policy))
    return out


def _order_check(roles: list[str], policy: CompiledPolicy) -> Check:
    """Some set's boot order holds: every stage it names was measured, in that order."""
    ok = [
        ref
        for ref, order in policy.boot_orders
        if _order_ok(roles, order) and set(order) <= set(roles)
    ]
    if ok:
        return Check(
            "boot.order", PASS, "ok", "boot chain order as approved", 4,
            got=" → ".join(roles), golden=_refs(tuple(ok)),
        )  # fmt: skip
    ref, order = policy.boot_orders[0]
    missing = [r for r in order if r not in roles]
    if missing:
        return Check(
            "boot.order", FAIL, "boot_stage_missing",
            f"boot stage(s) {', '.join(missing)} pinned by {ref} were never measured in PCR4", 4,
            got=" → ".join(roles) or "(none)", expected=" → ".join(order), golden=ref,
        )  # fmt: skip
    return Check(
        "boot.order", FAIL, "boot_order_wrong", "boot applications ran out of order", 4,
        got=" → ".join(roles), expected=" → ".join(order),
    )  # fmt: skip


def _moklists(
    vlog: BootLog, facts: BootFacts, policy: CompiledPolicy, ledger: Ledger
) -> list[Check]:
    """PCR14 by digest: each event an approved MokList value is accounted for; every pinned name
    must be among them (its "MokList" description is not covered and decides nothing)."""
    out: list[Check] = []
    seen: set[str] = set()
    bank = vlog.bank
    names_of = policy.moklist_names(bank)
    for e in facts.pcr14:
        digest = e.digests.get(bank)
        if digest is None:
            continue  # left to the closed-world check
        names = names_of.get(digest)
        if names:  # one value may be approved under two names (both lists empty, say)
            ledger.take(e)
            seen.update(n for n, _ in names)
            key = ("mok", e.pcr, e.index, e.event_type, digest)
            out.append(policy.remember(key, functools.partial(_approved_mok, e, names, digest)))
    for name in sorted(set(policy.moklist) - seen):
        out.append(
            Check(
                f"shim.{name.lower()}",
                FAIL,
                f"{name.lower()}_missing",
                f"{name} is pinned by the golden sets but no approved value is measured in PCR14",
                14,
            )
        )
    return out


def _approved_mok(e: Event, names: tuple[tuple[str, Refs], ...], digest: bytes) -> Check:
    return Check(
        f"shim.{names[0][0].lower()}",
        PASS,
        "ok",
        f"{where(e)}: approved {' / '.join(n for n, _ in names)}",
        14,
        e.index,
        got=digest.hex(),
        golden=_refs(tuple(r for _, refs in names for r in refs)),
    )


def check_os(
    vlog: BootLog, facts: BootFacts, policy: CompiledPolicy, ledger: Ledger
) -> list[Check]:
    out: list[Check] = []
    if policy.cmdline_exact or policy.cmdline_regex or policy.cmdline_load_options:
        out += _cmdlines(vlog, facts, policy, ledger)
    if policy.initrds:
        if not facts.initrds:
            out.append(
                Check("kernel.initrd", FAIL, "initrd_not_measured", "no initrd was measured", 9)
            )
        for e in facts.initrds:
            ledger.take(e)
            out.append(
                _digest_check(
                    vlog,
                    e,
                    policy.initrds,
                    "kernel.initrd",
                    "initrd",
                    "initrd_not_approved",
                    policy,
                )
            )
    if policy.kernel_lsm is not None:
        out += _kernel_lsm(vlog, facts, policy)
    out.extend(_moklists(vlog, facts, policy, ledger))
    if policy.sbat_levels:
        for e, text in facts.sbat_levels:
            ledger.take(e)
            out.append(
                _text_check(e, text, policy.sbat_levels, "shim.sbat_level", "SbatLevel", 7, policy)
            )
        if not facts.sbat_levels:
            out.append(
                Check(
                    "shim.sbat_level",
                    FAIL,
                    "sbat_level_missing",
                    "SbatLevel is pinned by the golden sets but not measured (covered) in PCR7",
                    7,
                    expected=" | ".join(sorted(policy.sbat_levels))[:200],
                )
            )
    return out


def _cmdlines(
    vlog: BootLog, facts: BootFacts, policy: CompiledPolicy, ledger: Ledger
) -> list[Check]:
    """Every command line measured: the text GRUB or systemd-boot logs in PCR8/PCR12, and the
    LoadOptions the Linux EFI stub measures into PCR9 (by digest only: see ``_load_options``)."""
    if not facts.cmdlines and not facts.load_options:
        return [
            Check(
                "kernel.cmdline", FAIL, "cmdline_not_measured",
                "no kernel command line was measured", 8,
            )
        ]  # fmt: skip
    out: list[Check] = []
    passed: list[str] = []
    for e, text in facts.cmdlines:
        ledger.take(e)
        check = _cmdline(e, text, policy)
        out.append(check)
        if check.status is PASS and text is not None:
            passed.append(text)
    for e in facts.load_options:
        ledger.take(e)
        out.append(_load_options(vlog, e, policy, passed))
    return out


def _load_options(vlog: BootLog, e: Event, policy: CompiledPolicy, passed: list[str]) -> Check:
    """PCR9 LoadOptions: its digest must be an approved command line in one of the forms loaders
    pass it (``load_options_forms``), or a command line of this log that passed (GRUB logs the
    text it hands over, so a regex rule can vouch for it), or digests a set approves as such."""
    digest = e.digests.get(vlog.bank)
    if digest is None:
        return _digest_missing(vlog, e, "kernel.cmdline")
    known = policy.load_options(vlog.bank).get(digest)
    if known is None:
        for seen in passed:
            if digest in {vlog.bank.hash(f) for f in load_options_forms(seen)}:
                known = (seen, ())
                break
    if known is not None:
        carried, refs = known
        what = "approved LoadOptions" if carried is None else repr(carried)
        return Check(
            "kernel.cmdline", PASS, "ok", f"{where(e)}: LoadOptions carry {what}", e.pcr, e.index,
            got=digest.hex(), golden=_refs(refs) or None,
        )  # fmt: skip
    return Check(
        "kernel.cmdline", FAIL, "cmdline_not_approved",
        f"{where(e)}: the LoadOptions digest {digest.hex()[:16]}… is no approved command line "
        "(in the forms GRUB 2.12, systemd-stub and OVMF direct boot pass it)", e.pcr, e.index,
        got=digest.hex(),
        expected=" | ".join([*policy.cmdline_exact, *(s for _, s, _ in policy.cmdline_regex)])[:500]
        or "approved LoadOptions digests",
    )  # fmt: skip


def _kernel_lsm(vlog: BootLog, facts: BootFacts, policy: CompiledPolicy) -> list[Check]:
    """Every command line whose text a digest covers (logged by GRUB or systemd-boot, or carried
    by LoadOptions whose digest is an approved command line's) must keep SELinux on and name only
    approved LSMs. Judging the LSM options says nothing of the rest of the line, so the events
    stay for the command-line and closed-world checks to account for."""
    assert policy.kernel_lsm is not None
    require, approved, refs = policy.kernel_lsm
    texts: list[tuple[Event, str]] = [(e, t) for e, t in facts.cmdlines if t is not None]
    known = policy.load_options(vlog.bank)
    for e in facts.load_options:
        hit = known.get(e.digests.get(vlog.bank, b""))
        if hit is not None and hit[0] is not None:
            texts.append((e, hit[0]))
    if not texts:
        return [
            Check(
                "boot.cmdline.lsm", FAIL, "cmdline_lsm_unverifiable",
                "no kernel command line whose text a digest covers was measured, so SELinux and "
                "the LSMs cannot be checked", 8, golden=_refs(refs),
            )
        ]  # fmt: skip
    out: list[Check] = []
    for e, text in texts:
        for c in check_lsm_cmdline(
            text, approved_lsms=approved, require_selinux=require, event=e.index, pcr=e.pcr
        ):
            out.append(c._replace(golden=_refs(refs)))
    return out


def _cmdline(e: Event, text: str | None, policy: CompiledPolicy) -> Check:
    key = ("cmdline", e.pcr, e.index, e.event_type, text)
    return policy.remember(key, lambda: _judge_cmdline(e, text, policy))


def _judge_cmdline(e: Event, text: str | None, policy: CompiledPolicy) -> Check:
    if text is None:
        return Check(
            "kernel.cmdline",
            FAIL,
            "cmdline_not_covered",
            f"{where(e)}: command line not covered by its digest",
            e.pcr,
            e.index,
        )
    refs = policy.cmdline_exact.get(text)
    if refs:
        return Check(
            "kernel.cmdline",
            PASS,
            "ok",
            f"{where(e)}: exact match",
            e.pcr,
            e.index,
            got=text,
            golden=_refs(refs),
        )
    for pattern, source, ref in policy.cmdline_regex:
        if pattern.fullmatch(text):
            return Check(
                "kernel.cmdline",
                PASS,
                "ok",
                f"{where(e)}: matches {source}",
                e.pcr,
                e.index,
                got=text,
                expected=source,
                golden=ref,
            )
    expected = [*policy.cmdline_exact, *(src for _, src, _ in policy.cmdline_regex)]
    return Check(
        "kernel.cmdline",
        FAIL,
        "cmdline_not_approved",
        f"{where(e)}: kernel command line is not approved",
        e.pcr,
        e.index,
        got=text,
        expected=" | ".join(expected)[:500],
    )
