"""Golden reference measurements: what a trusted node may have booted.

A :class:`GoldenSet` is one version of an operator-reviewed list of reference values. Several sets
apply to a node at once (old and new kernel during a rollout); the appraisal approves a value when
ANY active, unrevoked, in-validity set approves it. Everything here is immutable and carries no
policy logic beyond "is this set in force at time T" — evaluation lives in ``verifier.appraisal``.

Digests are keyed by PCR bank (:class:`assay.algorithms.HashAlg`). SHA-1 digests are accepted only
in a set that says ``allow_sha1: true``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, Literal, Self, TypeVar

from assay.algorithms import HashAlg

Status = Literal["active", "retired", "revoked"]
Role = Literal["shim", "loader", "kernel", "driver", "other"]
STATUSES: tuple[Status, ...] = ("active", "retired", "revoked")
ROLES: tuple[Role, ...] = ("shim", "loader", "kernel", "driver", "other")

Digests = Mapping[HashAlg, bytes]
"""One measured object's digest in each bank this set knows it for."""

S = TypeVar("S", bound=str)


class Lifecycle(Generic[S]):
    """The life of one reviewed version, shared by golden sets and runtime policies: it is named
    ``name@version``, has a status of which only ``active`` is in force (the others are kept to
    say why a value is no longer approved), and an optional validity window. A mixin for the
    frozen dataclasses that declare these fields; ``S`` is the statuses the kind allows."""

    __slots__ = ()
    name: str
    version: str
    status: S
    status_reason: str | None
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None

    @property
    def ref(self) -> str:
        """``name@version``, the way verdicts name the version that decided a check."""
        return f"{self.name}@{self.version}"

    def in_force(self, now: dt.datetime) -> bool:
        """Active (not a draft, retired or revoked) and ``now`` inside the validity window."""
        if self.status != "active":
            return False
        if self.valid_from is not None and now < self.valid_from:
            return False
        return self.valid_until is None or now < self.valid_until

    def with_status(self, status: S, reason: str | None = None) -> Self:
        """A copy with a new status: promoting, retiring or revoking never edits one in place."""
        # The subclasses are dataclasses; mypy cannot see that through Self.
        return dataclasses.replace(self, status=status, status_reason=reason)  # type: ignore[type-var]


def digests(items: Mapping[HashAlg, bytes] | Iterable[tuple[HashAlg, bytes]]) -> Digests:
    """A read-only, bank-ordered digest map (so that equal sets compare and dump identically)."""
    pairs = dict(items.items() if isinstance(items, Mapping) else items)
    return MappingProxyType({alg: pairs[alg] for alg in sorted(pairs)})


def _empty() -> Digests:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Measured:
    """A labelled object known by its digests: a firmware blob, an initrd, a MokList value."""

    label: str
    digests: Digests = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class BootApp:
    """An EFI binary approved to run, by its Authenticode digest (what firmware puts in PCR4)."""

    label: str
    role: Role
    digests: Digests = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class CmdlineRule:
    """A kernel command line: an exact string, a regular expression that must match it whole, or
    ``load_options``: the digests of the LoadOptions a Linux EFI stub measured into PCR9 (the only
    evidence of the command line under direct kernel boot or a UKI, which log no text)."""

    exact: str | None = None
    regex: str | None = None
    load_options: Digests = field(default_factory=_empty)

    def __post_init__(self) -> None:
        given = (self.exact is not None) + (self.regex is not None) + bool(self.load_options)
        if given != 1:
            raise ValueError(
                "a command-line rule needs exactly one of exact, regex or load_options"
            )
        if self.regex is not None:
            re.compile(self.regex)


@dataclass(frozen=True, slots=True)
class Firmware:
    """PCR0–3 references: S-CRTM version strings, firmware blob digests, optional exact PCR pins."""

    scrtm_versions: tuple[str, ...] = ()
    blobs: tuple[Measured, ...] = ()
    pcrs: Mapping[int, Digests] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class SecureBoot:
    """Secure Boot expectations (PCR7). Fingerprints are lowercase hex SHA-256.

    ``pk``/``kek`` are ``None`` when this set does not pin them (it then approves no value for that
    check rather than every value); ``db_must_contain``/``dbx_must_include`` list X.509 SHA-256
    fingerprints or hash-entry values that must be present.
    """

    required: bool = True
    pk: tuple[str, ...] | None = None
    kek: tuple[str, ...] | None = None
    db_must_contain: tuple[str, ...] = ()
    dbx_must_include: tuple[str, ...] = ()
    allow_debug_mode: bool = False
    allow_dma_protection_disabled: bool = False


@dataclass(frozen=True, slots=True)
class Shim:
    """shim's own state: MokList/MokListX contents (PCR14 digests) and the SbatLevel text (PCR7)."""

    moklist: tuple[Measured, ...] = ()
    moklistx: tuple[Measured, ...] = ()
    sbat_levels: tuple[str, ...] = ()


DEFAULT_LSMS: tuple[str, ...] = (
    "selinux",
    "lockdown",
    "capability",
    "landlock",
    "yama",
    "bpf",
    "integrity",
)


@dataclass(frozen=True, slots=True)
class KernelLsm:
    """The measured kernel command line must not switch the isolation off: SELinux on and enforcing
    (no ``selinux=0``, ``enforcing=0``) when ``require_selinux``, and ``security=``/``lsm=`` naming
    only ``approved`` LSMs."""

    require_selinux: bool = True
    approved: tuple[str, ...] = DEFAULT_LSMS


@dataclass(frozen=True, slots=True)
class GoldenSet(Lifecycle[Status]):
    """One version of a golden reference set (its status and validity: :class:`Lifecycle`).

    ``measurements`` approves, per PCR, digests that no other field describes (POST codes, handoff
    tables, boot variables, GPT, GRUB commands and files, shim's authorities, …): in a PCR the set
    relies on, every event's digest must be approved by some field or be a spec-fixed value.
    ``deny_workarounds`` names firmware workarounds (``assay.eventlog.WORKAROUNDS``) that this set
    refuses: a log needing one is untrusted.
    """

    name: str
    version: str
    description: str = ""
    status: Status = "active"
    status_reason: str | None = None
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None
    selector: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    allow_sha1: bool = False
    required_pcrs: tuple[int, ...] = ()
    firmware: Firmware = field(default_factory=Firmware)
    secure_boot: SecureBoot = field(default_factory=SecureBoot)
    boot_apps: tuple[BootApp, ...] = ()
    boot_order: tuple[Role, ...] = ()
    cmdlines: tuple[CmdlineRule, ...] = ()
    initrds: tuple[Measured, ...] = ()
    shim: Shim = field(default_factory=Shim)
    require_exit_boot_services: bool = True
    extra_event_types: Mapping[int, tuple[int, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    measurements: Mapping[int, tuple[Measured, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    deny_workarounds: tuple[str, ...] = ()
    kernel_lsm: KernelLsm | None = None

    def relied_pcrs(self) -> frozenset[int]:
        """The PCRs whose every measured digest this set must account for (closed world).

        A set relies on every PCR it requires quoted and every PCR it pins a value in: firmware
        (PCR0), boot applications and drivers (PCR2, PCR4), Secure Boot and SbatLevel (PCR7),
        command lines (PCR8), initrds (PCR9), MokLists (PCR14), and each PCR of ``measurements``.
        """
        out = set(self.required_pcrs) | set(self.firmware.pcrs) | set(self.measurements)
        fw = self.firmware
        if fw.scrtm_versions or fw.blobs:
            out.add(0)
        if self.boot_apps:
            out |= {2, 4}
        sb = self.secure_boot
        if (
            sb.required
            or sb.pk is not None
            or sb.kek is not None
            or sb.db_must_contain
            or sb.dbx_must_include
            or self.shim.sbat_levels
        ):
            out.add(7)
        if self.cmdlines or self.kernel_lsm is not None:
            out.add(8)
        if self.initrds or any(c.load_options for c in self.cmdlines):
            out.add(9)
        if self.initrds:
            out.add(9)
        if self.shim.moklist or self.shim.moklistx:
            out.add(14)
        return frozenset(out)

    def with_boot_apps(self, apps: Iterable[BootApp]) -> GoldenSet:
        """A copy with ``apps`` added (an app already present is kept once)."""
        merged = list(self.boot_apps)
        for app in apps:
            if app not in merged:
                merged.append(app)
        return dataclasses.replace(self, boot_apps=tuple(merged))


def utc(value: dt.datetime) -> dt.datetime:
    """Naive datetimes in a golden file are taken as UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
