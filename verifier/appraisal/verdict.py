"""The result of an appraisal: every check made, and the verdict they add up to."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple


class CheckStatus(StrEnum):
    """One check's outcome. A StrEnum: stored and sent as its value ("pass", "fail", "unknown")."""

    PASS = "pass"  # noqa: S105 (a check outcome, not a password)
    FAIL = "fail"
    UNKNOWN = "unknown"


class VerdictStatus(StrEnum):
    """What the checks add up to; the node's inventory state follows it."""

    TRUSTED = "trusted"
    UNTRUSTED = "untrusted"
    UNKNOWN = "unknown"


PASS, FAIL, UNKNOWN = CheckStatus.PASS, CheckStatus.FAIL, CheckStatus.UNKNOWN


class Check(NamedTuple):
    """One check: a stable ``reason`` code, where (PCR, event index), got vs expected, and which
    golden set (``name@version``) decided it.

    Immutable like the rest of the verdict; a NamedTuple rather than a frozen dataclass because an
    appraisal builds 20–40 of them and a frozen dataclass's ``__init__`` costs about twice as much
    (``assay.eventlog.Event`` is a NamedTuple for the same reason)."""

    id: str
    status: CheckStatus
    reason: str
    message: str
    pcr: int | None = None
    event: int | None = None
    got: str | None = None
    expected: str | None = None
    golden: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "reason": self.reason,
            "pcr": self.pcr,
            "event": self.event,
            "got": self.got,
            "expected": self.expected,
            "golden": self.golden,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """``trusted`` only when every check passed; any failure is ``untrusted``; otherwise
    ``unknown`` (something could not be checked). An empty list of checks is never trusted."""

    status: VerdictStatus
    checks: tuple[Check, ...]

    @classmethod
    def of(cls, checks: list[Check]) -> Verdict:
        if any(c.status is FAIL for c in checks):
            status = VerdictStatus.UNTRUSTED
        elif not checks or any(c.status is UNKNOWN for c in checks):
            status = VerdictStatus.UNKNOWN
        else:
            status = VerdictStatus.TRUSTED
        return cls(status, tuple(checks))

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status is not PASS)

    @property
    def reason(self) -> str:
        """One line: the first failing (else unknown) check's message, or "all N checks passed"."""
        for wanted in (FAIL, UNKNOWN):
            for c in self.checks:
                if c.status is wanted:
                    return f"{c.reason}: {c.message}"
        return f"all {len(self.checks)} checks passed"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "checks": [c.to_json() for c in self.checks],
        }


# Failures that still say which version the component belongs to: it matched a set no longer in force.
_MATCHED_INACTIVE = frozenset(("golden_revoked", "boot_app_retired", "boot_app_expired"))
# Checks whose ``golden`` names the sets in force or that require something, not what matched.
_NOT_MATCHES = frozenset(("policy.golden_sets", "secure_boot.enabled"))


def booted_versions(checks: Iterable[Check]) -> tuple[str, ...]:
    """Which version of each golden set the appraised boot matched (``name@version``, sorted).

    Read from the checks that matched a value — passing ones, and failures that matched a version
    no longer in force (``golden_revoked``, …) — never from labels: for each set name, the versions
    named by every such check that names the set. Two versions that approve the same shim both
    match its check; only the one that approves the kernel too matches them all."""
    return _booted((c.id, c.golden, c.status is PASS, c.reason) for c in checks)


def booted_versions_of_json(checks: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """``booted_versions`` of a stored verdict document's checks (a reused verdict)."""
    return _booted(
        (str(c["id"]), c.get("golden"), c.get("status") == PASS, str(c.get("reason")))
        for c in checks
    )


def _booted(checks: Iterable[tuple[str, str | None, bool, str]]) -> tuple[str, ...]:
    by_name: dict[str, set[str]] = {}
    for check_id, golden, passed, reason in checks:
        if golden is None or check_id in _NOT_MATCHES:
            continue
        if not passed and reason not in _MATCHED_INACTIVE:
            continue
        named: dict[str, set[str]] = {}
        for ref in golden.split(", "):
            name, sep, version = ref.rpartition("@")
            if sep:
                named.setdefault(name, set()).add(version)
        for name, versions in named.items():
            known = by_name.get(name)
            by_name[name] = versions if known is None else known & versions
    return tuple(sorted(f"{n}@{v}" for n, vs in by_name.items() for v in vs))
