"""Golden sets compiled once into lookup tables, reused for every node that the sets apply to.

Semantics (the same for every reference value): a check is *enabled* when at least one set in force
states that aspect; a value passes when ANY set in force approves it. Sets not in force (retired,
revoked, expired, not yet valid) approve nothing, but are kept so a failure can say "revoked: <why>".
An empty or all-inactive input compiles to a policy that cannot produce a trusted verdict.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from assay.algorithms import HashAlg
from assay.bootfacts import load_options_forms
from assay.pcclient import AFTER_SEPARATOR, ALLOWED_TYPES, fixed_digests
from assay.uefi.sigdb import RequiredIds
from golden.model import GoldenSet, Role

Key = tuple[HashAlg, bytes]
V = TypeVar("V")
_MISSING = object()
Refs = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Approval:
    """One set's word on a digest: which set, the label it gave, and its standing."""

    ref: str
    label: str
    role: Role
    status: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """Lookup tables over the sets in force at ``now``. Build with :func:`compile_golden`."""

    now: dt.datetime
    in_force: Refs
    not_in_force: tuple[tuple[str, str, str | None], ...]  # (ref, status or "expired", reason)
    sha1_refs: Refs
    required_pcrs: frozenset[int]
    allowed_types: dict[int, frozenset[int]]
    after_separator: dict[int, frozenset[int]]
    boot_apps: dict[Key, tuple[Approval, ...]]
    inactive_apps: dict[Key, tuple[Approval, ...]]
    apps_enabled: bool
    boot_orders: tuple[tuple[str, tuple[Role, ...]], ...]
    scrtm: dict[str, Refs]
    blobs: dict[Key, Refs]
    pcr_pins: dict[int, dict[Key, Refs]]
    sb_off_ok: Refs
    sb_required_by: Refs
    pk: dict[str, Refs] | None
    kek: dict[str, Refs] | None
    db_required: tuple[tuple[str, RequiredIds], ...]
    dbx_required: tuple[tuple[str, RequiredIds], ...]
    debug_ok: Refs
    dma_ok: Refs
    cmdline_exact: dict[str, Refs]
    cmdline_regex: tuple[tuple[re.Pattern[str], str, str], ...]  # (compiled, source, ref)
    cmdline_load_options: dict[Key, Refs]  # LoadOptions digests a set approves as such
    kernel_lsm: tuple[bool, frozenset[str], Refs] | None  # (require SELinux, approved LSMs, refs)
    initrds: dict[Key, Refs]
    moklist: dict[str, dict[Key, Refs]]
    sbat_levels: dict[str, Refs]
    require_ebs_by: Refs
    relied_pcrs: frozenset[int]
    approved: dict[tuple[int, HashAlg, bytes], tuple[tuple[str, str], ...]]  # → ((ref, label), …)
    revoked: dict[tuple[int, HashAlg, bytes], tuple[tuple[str, str], ...]]  # same, revoked sets
    blob_sets: tuple[tuple[str, tuple[Key, ...]], ...]  # (ref, its blobs' digests)
    denied_workarounds: dict[str, Refs]
    _by_bank: dict[HashAlg, dict[int, frozenset[bytes]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _apps_by_bank: dict[HashAlg, frozenset[bytes]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _unaccepted: dict[tuple[HashAlg, int, bytes], frozenset[bytes | None]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _remembered: dict[Hashable, object] = field(default_factory=dict, compare=False, repr=False)
    _moks_by_bank: dict[HashAlg, dict[bytes, tuple[tuple[str, Refs], ...]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def empty(self) -> bool:
        return not self.in_force

    def moklist_names(self, bank: HashAlg) -> dict[bytes, tuple[tuple[str, Refs], ...]]:
        """Digest in ``bank`` → the MokList names approving it, with their sets (built once)."""
        got = self._moks_by_bank.get(bank)
        if got is None:
            found: dict[bytes, tuple[tuple[str, Refs], ...]] = {}
            for name, table in sorted(self.moklist.items()):
                for (alg, digest), refs in table.items():
                    if alg is bank:
                        found[digest] = (*found.get(digest, ()), (name, refs))
            got = self._moks_by_bank[bank] = found
        return got

    def unaccepted(
        self,
        bank: HashAlg,
        pcr: int,
        value: bytes | None,
        digests: Iterable[bytes | None],
    ) -> frozenset[bytes | None]:
        """Of ``digests`` (those the log's events extended into ``pcr``, whose verified value is
        ``value``), the ones neither approved nor spec-fixed; kept per PCR value, which names the
        digests (verify_log makes the events replay to it)."""
        got = self._unaccepted.get((bank, pcr, value)) if value is not None else None
        if got is None:
            ok = self.accepted_digests(bank).get(pcr, frozenset())
            seen = tuple(digests)
            got = frozenset(seen).difference(ok)
            if value is not None and seen:  # a value without events may come from outside the log
                if len(self._unaccepted) >= 4096:
                    self._unaccepted.clear()
                self._unaccepted[(bank, pcr, value)] = got
        return got

    def remember(self, key: Hashable, make: Callable[[], V]) -> V:
        """A value this policy computed before for ``key`` (a verdict check, say: immutable and a
        pure function of the policy and the key), else ``make()``. Bounded; emptied when full."""
        got = self._remembered.get(key, _MISSING)
        if got is _MISSING:
            got = make()
            if len(self._remembered) >= 16384:
                self._remembered.clear()
            self._remembered[key] = got
        return got  # type: ignore[return-value]

    def load_options(self, bank: HashAlg) -> dict[bytes, tuple[str | None, Refs]]:
        """LoadOptions digest in ``bank`` → (the command line it carries, the sets approving it):
        every exact command line in each loader's form (``load_options_forms``), and the
        digests sets approve as such (text None: known by digest only)."""
        return self.remember(("load_options", bank), lambda: self._load_options(bank))

    def _load_options(self, bank: HashAlg) -> dict[bytes, tuple[str | None, Refs]]:
        out: dict[bytes, tuple[str | None, Refs]] = {}
        for text, refs in self.cmdline_exact.items():
            for form in load_options_forms(text):
                out.setdefault(bank.hash(form), (text, refs))
        for (alg, digest), refs in self.cmdline_load_options.items():
            if alg is bank:
                out.setdefault(digest, (None, refs))
        return out

    def app_digests(self, bank: HashAlg) -> frozenset[bytes]:
        """Digests in ``bank`` of every boot application a set knows, in force or not."""
        got = self._apps_by_bank.get(bank)
        if got is None:
            got = frozenset(d for alg, d in (*self.boot_apps, *self.inactive_apps) if alg is bank)
            self._apps_by_bank[bank] = got
        return got

    def accepted_digests(self, bank: HashAlg) -> dict[int, frozenset[bytes]]:
        """PCR0–23 → the digests in ``bank`` that ``approved`` or ``fixed`` (the spec's) account
        for, built once per bank (the policy is immutable)."""
        got = self._by_bank.get(bank)
        if got is None:
            found: dict[int, set[bytes]] = {p: set(fixed_digests(bank, p)) for p in range(24)}
            for pcr, alg, digest in self.approved:
                if alg is bank and pcr in found:
                    found[pcr].add(digest)
            got = self._by_bank[bank] = {p: frozenset(d) for p, d in found.items()}
        return got


def _add(table: dict[Key, Refs], ref: str, digests: Mapping[HashAlg, bytes]) -> None:
    for alg, value in digests.items():
        key = (alg, value)
        table[key] = (*table.get(key, ()), ref)


def _add_text(table: dict[str, Refs], ref: str, text: str) -> None:
    table[text] = (*table.get(text, ()), ref)


def _compile_apps(
    sets: Sequence[GoldenSet], now: dt.datetime
) -> tuple[dict[Key, tuple[Approval, ...]], dict[Key, tuple[Approval, ...]]]:
    active: dict[Key, tuple[Approval, ...]] = {}
    inactive: dict[Key, tuple[Approval, ...]] = {}
    for g in sets:
        live = g.in_force(now)
        status = g.status if g.status != "active" else ("active" if live else "expired")
        table = active if live else inactive
        for app in g.boot_apps:
            approval = Approval(g.ref, app.label, app.role, status, g.status_reason)
            for alg, value in app.digests.items():
                table[(alg, value)] = (*table.get((alg, value), ()), approval)
    return active, inactive


def _secure_boot_tables(live: Sequence[GoldenSet]) -> dict[str, object]:
    pk: dict[str, Refs] | None = None
    kek: dict[str, Refs] | None = None
    for g in live:
        sb = g.secure_boot
        if sb.pk is not None:
            pk = pk if pk is not None else {}
            for fp in sb.pk:
                _add_text(pk, g.ref, fp)
        if sb.kek is not None:
            kek = kek if kek is not None else {}
            for fp in sb.kek:
                _add_text(kek, g.ref, fp)
    return {
        "pk": pk,
        "kek": kek,
        "db_required": tuple(
            (g.ref, RequiredIds(g.secure_boot.db_must_contain))
            for g in live
            if g.secure_boot.db_must_contain
        ),
        "dbx_required": tuple(
            (g.ref, RequiredIds(g.secure_boot.dbx_must_include))
            for g in live
            if g.secure_boot.dbx_must_include
        ),
        "sb_off_ok": tuple(g.ref for g in live if not g.secure_boot.required),
        "sb_required_by": tuple(g.ref for g in live if g.secure_boot.required),
        "debug_ok": tuple(g.ref for g in live if g.secure_boot.allow_debug_mode),
        "dma_ok": tuple(g.ref for g in live if g.secure_boot.allow_dma_protection_disabled),
    }


def _value_tables(live: Sequence[GoldenSet]) -> dict[str, object]:
    scrtm: dict[str, Refs] = {}
    blobs: dict[Key, Refs] = {}
    pins: dict[int, dict[Key, Refs]] = {}
    exact: dict[str, Refs] = {}
    regex: list[tuple[re.Pattern[str], str, str]] = []
    load_options: dict[Key, Refs] = {}
    initrds: dict[Key, Refs] = {}
    mok: dict[str, dict[Key, Refs]] = {}
    sbat: dict[str, Refs] = {}
    for g in live:
        for text in g.firmware.scrtm_versions:
            _add_text(scrtm, g.ref, text)
        for blob in g.firmware.blobs:
            _add(blobs, g.ref, blob.digests)
        for pcr, d in g.firmware.pcrs.items():
            _add(pins.setdefault(pcr, {}), g.ref, d)
        for rule in g.cmdlines:
            if rule.exact is not None:
                _add_text(exact, g.ref, rule.exact)
            elif rule.regex is not None:
                regex.append((re.compile(rule.regex), rule.regex, g.ref))
            else:
                _add(load_options, g.ref, rule.load_options)
        for m in g.initrds:
            _add(initrds, g.ref, m.digests)
        for name, items in (("MokList", g.shim.moklist), ("MokListX", g.shim.moklistx)):
            for m in items:
                _add(mok.setdefault(name, {}), g.ref, m.digests)
        for level in g.shim.sbat_levels:
            _add_text(sbat, g.ref, level)
    return {
        "scrtm": scrtm,
        "blobs": blobs,
        "pcr_pins": pins,
        "cmdline_exact": exact,
        "cmdline_regex": tuple(regex),
        "cmdline_load_options": load_options,
        "initrds": initrds,
        "moklist": mok,
        "sbat_levels": sbat,
    }


def _approved(
    live: Sequence[GoldenSet],
) -> dict[tuple[int, HashAlg, bytes], tuple[tuple[str, str], ...]]:
    """Every digest a set approves, keyed by the PCR it may be extended into: the closed world's
    ledger. Boot applications may run from PCR4 (and, as drivers, PCR2); firmware blobs are PCR0;
    initrds PCR9; MokLists PCR14; ``measurements`` name their PCR."""
    out: dict[tuple[int, HashAlg, bytes], tuple[tuple[str, str], ...]] = {}

    def add(pcrs: tuple[int, ...], ref: str, label: str, d: Mapping[HashAlg, bytes]) -> None:
        for pcr in pcrs:
            for alg, value in d.items():
                key = (pcr, alg, value)
                out[key] = (*out.get(key, ()), (ref, label))

    for g in live:
        for app in g.boot_apps:
            add((2, 4), g.ref, f"{app.role} {app.label}", app.digests)
        for m in g.firmware.blobs:
            add((0,), g.ref, m.label, m.digests)
        for m in g.initrds:
            add((9,), g.ref, f"initrd {m.label}", m.digests)
        for rule in g.cmdlines:
            add((9,), g.ref, "kernel LoadOptions", rule.load_options)
        for name, items in (("MokList", g.shim.moklist), ("MokListX", g.shim.moklistx)):
            for m in items:
                add((14,), g.ref, f"{name} {m.label}", m.digests)
        for pcr, items in g.measurements.items():
            for m in items:
                add((pcr,), g.ref, m.label, m.digests)
    return out


def _kernel_lsm(live: Sequence[GoldenSet]) -> tuple[bool, frozenset[str], Refs] | None:
    """Enabled when a set in force states it: SELinux required if any set requires it; an LSM
    is approved when any of them approves it."""
    rules = [(g.ref, g.kernel_lsm) for g in live if g.kernel_lsm is not None]
    if not rules:
        return None
    return (
        any(r.require_selinux for _, r in rules),
        frozenset(x for _, r in rules for x in r.approved),
        tuple(ref for ref, _ in rules),
    )


def _denied(live: Sequence[GoldenSet]) -> dict[str, Refs]:
    out: dict[str, Refs] = {}
    for g in live:
        for name in g.deny_workarounds:
            _add_text(out, g.ref, name)
    return out


def compile_golden(sets: Sequence[GoldenSet], *, now: dt.datetime | None = None) -> CompiledPolicy:
    """Compile ``sets`` as they stand at ``now`` (default: the current time, UTC)."""
    when = now if now is not None else dt.datetime.now(dt.UTC)
    live = [g for g in sets if g.in_force(when)]
    dead = tuple(
        (g.ref, g.status if g.status != "active" else "expired", g.status_reason)
        for g in sets
        if not g.in_force(when)
    )
    allowed = dict(ALLOWED_TYPES)
    after = dict(AFTER_SEPARATOR)
    for g in live:  # vendor types an operator reviewed are allowed anywhere in their PCR
        for pcr, types in g.extra_event_types.items():
            allowed[pcr] = allowed.get(pcr, frozenset()) | frozenset(types)
            if pcr in after:
                after[pcr] = after[pcr] | frozenset(types)
    apps, inactive_apps = _compile_apps(sets, when)
    policy = CompiledPolicy(
        now=when,
        in_force=tuple(g.ref for g in live),
        not_in_force=dead,
        sha1_refs=tuple(g.ref for g in live if g.allow_sha1),
        required_pcrs=frozenset(p for g in live for p in g.required_pcrs),
        allowed_types=allowed,
        after_separator=after,
        boot_apps=apps,
        inactive_apps=inactive_apps,
        apps_enabled=any(g.boot_apps for g in live) or not live,
        boot_orders=tuple((g.ref, g.boot_order) for g in live if g.boot_order),
        require_ebs_by=tuple(g.ref for g in live if g.require_exit_boot_services),
        relied_pcrs=frozenset(p for g in live for p in g.relied_pcrs()),
        approved=_approved(live),
        kernel_lsm=_kernel_lsm(live),
        revoked=_approved([g for g in sets if g.status == "revoked"]),
        blob_sets=tuple(
            (g.ref, tuple((alg, v) for m in g.firmware.blobs for alg, v in m.digests.items()))
            for g in live
            if g.firmware.blobs
        ),
        denied_workarounds=_denied(live),
        **_secure_boot_tables(live),  # type: ignore[arg-type]
        **_value_tables(live),  # type: ignore[arg-type]
    )
    # The per-bank lookup tables, built now rather than by the first appraisal that needs them.
    for bank in {alg for _, alg, _ in policy.approved} | {HashAlg.SHA256}:
        policy.accepted_digests(bank)
        policy.app_digests(bank)
        policy.moklist_names(bank)
    return policy
