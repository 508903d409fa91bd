"""Build a golden set from a known-good node's event log (an operator reviews it before use).

Everything the appraisal checks is taken from the log as it is: firmware versions and blobs, the
Secure Boot keys and databases, boot applications, command lines, initrds, MokLists, SbatLevel.
Nothing unsafe is allowed by capture (debug mode, DMA protection off stay failures).
"""

from __future__ import annotations

from collections.abc import Iterable

from assay.algorithms import HashAlg
from assay.eventlog import Event, VerifiedBootLog
from verifier.appraisal.facts import EBS_INVOCATION, BootFacts, extract, signature_ids
from verifier.appraisal.policy import ALLOWED_TYPES

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
    var = facts.variables.get(name)
    if var is None or var.value is None:
        return ()
    return tuple(sorted(signature_ids(var.value)))


def _secure_boot(facts: BootFacts) -> SecureBoot:
    var = facts.variables.get("SecureBoot")
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


def _extra_types(vlog: VerifiedBootLog) -> dict[int, tuple[int, ...]]:
    extra: dict[int, set[int]] = {}
    for e in vlog.events:
        if e.event_type not in ALLOWED_TYPES.get(e.pcr, ()):
            extra.setdefault(e.pcr, set()).add(e.event_type)
    return {pcr: tuple(sorted(types)) for pcr, types in sorted(extra.items())}


def capture(vlog: VerifiedBootLog, *, name: str, version: str, description: str = "") -> GoldenSet:
    """A golden set that approves exactly what ``vlog`` measured (in its verified bank)."""
    facts = extract(vlog)
    allow_sha1 = vlog.bank is HashAlg.SHA1
    moklists = {
        n: _unique(Measured(n, _digests(e, allow_sha1)) for e in evs)
        for n, evs in facts.moklists.items()
    }
    return GoldenSet(
        name=name,
        version=version,
        description=description or f"captured from event log {vlog.log_sha256.hex()[:16]}",
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
        cmdlines=tuple(
            CmdlineRule(exact=t)
            for t in dict.fromkeys(t for _, t in facts.cmdlines if t is not None)
        ),
        initrds=_unique(
            Measured(f"PCR{e.pcr} event {e.index}", _digests(e, allow_sha1)) for e in facts.initrds
        ),
        shim=Shim(
            moklist=moklists.get("MokList", ()),
            moklistx=moklists.get("MokListX", ()),
            sbat_levels=tuple(dict.fromkeys(t for _, t in facts.sbat_levels if t is not None)),
        ),
        require_exit_boot_services=any(e.data == EBS_INVOCATION for e in facts.ebs_events),
        extra_event_types=_extra_types(vlog),
    )
