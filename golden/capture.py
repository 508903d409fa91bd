"""Build a golden set from a known-good node's event log (an operator reviews it before use).

Everything the appraisal checks is taken from the log as it is: firmware versions and blobs, the
Secure Boot keys and databases, boot applications, command lines, initrds, MokLists, SbatLevel.
Every other event of the PCRs the set relies on (0–9 as quoted, and 14) is approved by its digest
under ``measurements``, so the captured set accounts for exactly what the log measured and nothing
more. Nothing unsafe is allowed by capture (debug mode, DMA protection off stay failures).

Capture reads the log through :mod:`assay.bootfacts` and the PC Client rules in
:mod:`assay.pcclient`, as the verifier's appraisal does, and imports nothing of the verifier; a test
checks on every corpus log that ``measurements`` holds exactly the events the appraisal would
otherwise leave unaccounted for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from types import MappingProxyType

from assay.algorithms import HashAlg
from assay.bootfacts import BootFacts, authority_id, extract, load_options_forms, signature_ids
from assay.errors import MalformedEvidence
from assay.eventlog import BootLog, Event
from assay.pcclient import ALLOWED_TYPES, EBS_INVOCATION, fixed_action_text, fixed_digests

from .model import (
    BootApp,
    CmdlineRule,
    Digests,
    Firmware,
    GoldenSet,
    Measured,
    SecureBoot,
    Shim,
    digests,
)

_CAPTURE_BANKS = (HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512)


def _digests(e: Event, allow_sha1: bool) -> Digests:
    return digests(
        (alg, d)
        for alg, d in e.digests.items()
        if alg in _CAPTURE_BANKS and (allow_sha1 or alg is not HashAlg.SHA1)
    )


def _unique(items: Iterable[Measured]) -> tuple[Measured, ...]:
    seen: dict[tuple[tuple[HashAlg, bytes], ...], Measured] = {}
    for m in items:
        seen.setdefault(tuple(m.digests.items()), m)
    return tuple(seen.values())


def _ids(facts: BootFacts, name: str) -> tuple[str, ...]:
    var = facts.variable(name)
    if var is None:
        return ()
    return tuple(sorted(signature_ids(var.value)))


def _secure_boot(facts: BootFacts) -> SecureBoot:
    var = facts.variable("SecureBoot")
    on = var is not None and var.value == b"\x01"
    return SecureBoot(
        required=on,
        pk=_ids(facts, "PK"),
        kek=_ids(facts, "KEK"),
        db_must_contain=_ids(facts, "db"),
        dbx_must_include=_ids(facts, "dbx"),
    )


def _apps(facts: BootFacts, allow_sha1: bool) -> tuple[BootApp, ...]:
    apps: dict[tuple[tuple[HashAlg, bytes], ...], BootApp] = {}
    for role, events in (("other", facts.boot_apps), ("driver", facts.drivers)):
        for e in events:
            d = _digests(e, allow_sha1)
            label = f"PCR{e.pcr} event {e.index} ({e.type_name})"
            apps.setdefault(tuple(d.items()), BootApp(label, role, d))  # type: ignore[arg-type]
    return tuple(apps.values())


def _extra_types(vlog: BootLog) -> dict[int, tuple[int, ...]]:
    extra: dict[int, set[int]] = {}
    for e in vlog.events:
        if e.event_type not in ALLOWED_TYPES.get(e.pcr, ()):
            extra.setdefault(e.pcr, set()).add(e.event_type)
    return {pcr: tuple(sorted(types)) for pcr, types in sorted(extra.items())}


def _moklists(facts: BootFacts, allow_sha1: bool) -> dict[str, tuple[Measured, ...]]:
    """PCR14 events by the name shim wrote beside them: only a label here, for the operator who
    reviews the set; the appraisal knows them by digest alone."""
    found: dict[str, list[Measured]] = {}
    for e in facts.pcr14:
        label = e.data.rstrip(b"\x00")
        if label in (b"MokList", b"MokListX"):
            found.setdefault(label.decode(), []).append(
                Measured(label.decode(), _digests(e, allow_sha1))
            )
    return {n: _unique(items) for n, items in found.items()}


def _label(e: Event) -> str:
    text = e.data[:48].rstrip(b"\x00")
    shown = text.decode("ascii") if text.isascii() and text.decode("ascii").isprintable() else ""
    return f"PCR{e.pcr} event {e.index} ({e.type_name})" + (f" {shown}" if shown else "")


def _measurements(
    vlog: BootLog, facts: BootFacts, categorised: GoldenSet, allow_sha1: bool
) -> dict[int, tuple[Measured, ...]]:
    """Every event of the captured PCRs that the categorised set does not account for: neither
    spec-fixed, nor approved by its digest (boot applications, blobs, initrds, MokLists), nor read
    for a value the set pins (see :func:`_judged`)."""
    bank = vlog.bank
    pcrs = frozenset(p for p in vlog.pcrs if p <= 9 or p == 14)
    approved = _approved_digests(categorised, bank)
    judged = _judged(facts, categorised)
    found: dict[int, list[Measured]] = {}
    for e in vlog.events:
        if e.pcr not in pcrs or e.index in judged:
            continue
        digest = e.digests.get(bank)
        if digest is not None and (
            digest in fixed_digests(bank, e.pcr)
            or digest in approved.get(e.pcr, ())
            or fixed_action_text(vlog, e)
        ):
            continue
        found.setdefault(e.pcr, []).append(Measured(_label(e), _digests(e, allow_sha1)))
    return {pcr: _unique(items) for pcr, items in sorted(found.items())}


def _approved_digests(gs: GoldenSet, bank: HashAlg) -> dict[int, set[bytes]]:
    """The digests ``gs`` approves per PCR in ``bank`` by category."""
    out: dict[int, set[bytes]] = {}

    def add(pcrs: tuple[int, ...], items: Iterable[Measured | BootApp]) -> None:
        for m in items:
            d = m.digests.get(bank)
            if d is not None:
                for pcr in pcrs:
                    out.setdefault(pcr, set()).add(d)

    add((0,), gs.firmware.blobs)
    add((2, 4), gs.boot_apps)
    add((9,), gs.initrds)
    add((14,), (*gs.shim.moklist, *gs.shim.moklistx))
    return out


def _cmdlines(vlog: BootLog, facts: BootFacts, allow_sha1: bool) -> tuple[CmdlineRule, ...]:
    """Each command line logged as text, and each LoadOptions digest (PCR9) that none of those
    texts explains: under direct kernel boot or a UKI that digest is the only evidence of the
    command line, and recording it keeps any other command line from passing."""
    texts = tuple(dict.fromkeys(t for _, t in facts.cmdlines if t is not None))
    explained = {vlog.bank.hash(f) for t in texts for f in load_options_forms(t)}
    rules = [CmdlineRule(exact=t) for t in texts]
    for e in facts.load_options:
        digest = e.digests.get(vlog.bank)
        if digest is not None and digest not in explained:
            explained.add(digest)
            rules.append(CmdlineRule(load_options=_digests(e, allow_sha1)))
    return tuple(rules)


def _db_entries(facts: BootFacts) -> frozenset[str]:
    """Every entry of the measured db (none when one measurement is malformed)."""
    try:
        return frozenset().union(*(signature_ids(v.value) for v in facts.variables.get("db", [])))
    except MalformedEvidence:
        return frozenset()


def _judged(facts: BootFacts, gs: GoldenSet) -> set[int]:
    """Events the appraisal reads a value from when ``gs`` is the policy: the S-CRTM version, the
    Secure Boot variables it pins, the db entries images were verified with, the unsafe platform
    states, the command lines and SbatLevel (by event index)."""
    out: set[int] = set()
    if gs.firmware.scrtm_versions:
        out.update(e.index for e, _ in facts.scrtm_versions)
    sb = gs.secure_boot
    pinned = {
        "SecureBoot": True,
        "PK": sb.pk is not None,
        "KEK": sb.kek is not None,
        "db": bool(sb.db_must_contain),
        "dbx": bool(sb.dbx_must_include),
    }
    for name, variables in facts.variables.items():
        if pinned.get(name):
            out.update(v.event.index for v in variables)
    ids = _db_entries(facts)
    out.update(e.index for e, value in facts.authorities if authority_id(value) in ids)
    out.update(e.index for e, _ in facts.platform_states)
    if gs.cmdlines:
        out.update(e.index for e, _ in facts.cmdlines)
        out.update(e.index for e in facts.load_options)
    if gs.shim.sbat_levels:
        out.update(e.index for e, _ in facts.sbat_levels)
    return out


def capture(vlog: BootLog, *, name: str, version: str, description: str = "") -> GoldenSet:
    """A golden set that approves exactly what ``vlog`` measured (in its verified bank)."""
    facts = extract(vlog)
    allow_sha1 = vlog.bank is HashAlg.SHA1
    moklists = _moklists(facts, allow_sha1)
    categorised = GoldenSet(
        name=name,
        version=version,
        description=description or f"captured from a {vlog.bank.bank} event log",
        allow_sha1=allow_sha1,
        required_pcrs=tuple(sorted(p for p in vlog.pcrs if p <= 9)),
        firmware=Firmware(
            scrtm_versions=tuple(
                dict.fromkeys(t for _, t in facts.scrtm_versions if t is not None)
            ),
            blobs=_unique(
                Measured(f"PCR0 event {e.index} ({e.type_name})", _digests(e, allow_sha1))
                for e in facts.firmware_code
            ),
        ),
        secure_boot=_secure_boot(facts),
        boot_apps=_apps(facts, allow_sha1),
        cmdlines=_cmdlines(vlog, facts, allow_sha1),
        initrds=_unique(
            Measured(f"PCR{e.pcr} event {e.index}", _digests(e, allow_sha1)) for e in facts.initrds
        ),
        shim=Shim(
            moklist=moklists.get("MokList", ()),
            moklistx=moklists.get("MokListX", ()),
            sbat_levels=tuple(dict.fromkeys(t for _, t in facts.sbat_levels if t is not None)),
        ),
        require_exit_boot_services=any(a == EBS_INVOCATION for _, a in facts.ebs_events),
        extra_event_types=_extra_types(vlog),
    )
    measured = _measurements(vlog, facts, categorised, allow_sha1)
    return dataclasses.replace(categorised, measurements=MappingProxyType(measured))
