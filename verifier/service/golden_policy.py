"""A node's golden policy: its golden sets parsed from the store, compiled once per set of
versions (``policy_for``), and the service's record of an appraisal (``Assessment``).

The store's status (active / retired / revoked + reason) overrides what the uploaded document
said, so a revocation recorded in the database takes effect without re-uploading anything.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from assay.errors import ConfigurationError, MalformedEvidence
from assay.eventlog import VerifiedBootLog
from golden.model import GoldenSet, Status
from verifier.appraisal import (
    CheckStatus,
    CompiledPolicy,
    VerdictStatus,
    appraise,
    booted_versions,
    booted_versions_of_json,
    compile_golden,
)

from .context import Services

GOLDEN_FORMATS = ("yaml", "corim")
T = TypeVar("T")
C = TypeVar("C")


class Windowed(Protocol):
    """A policy document with a validity window (golden sets, runtime policies)."""

    @property
    def valid_from(self) -> dt.datetime | None: ...
    @property
    def valid_until(self) -> dt.datetime | None: ...


W = TypeVar("W", bound=Windowed)


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the service keeps of a verdict: status, one-line reason, checks, golden versions."""

    status: VerdictStatus
    reason: str
    checks: list[dict[str, Any]]
    golden: list[str]
    verdict: dict[str, Any]
    booted: list[str] = dataclasses.field(default_factory=list)  # versions the boot matched

    def __post_init__(self) -> None:
        # The reason may quote the evidence (a log's strings are the node's): stored as a text
        # column, it holds no NUL and no lone surrogate (PostgreSQL and UTF-8 refuse both).
        object.__setattr__(self, "reason", storable_text(self.reason))


def storable_text(text: str) -> str:
    """``text`` with NUL and lone surrogates escaped (``\\x00``, ``\\ud800``), else as it is."""
    if "\x00" not in text and text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def parse_golden(fmt: str, data: bytes, source: str = "<upload>") -> GoldenSet:
    """A golden set from an uploaded YAML or CoRIM document (MalformedEvidence if unusable)."""
    where = f"golden set ({fmt})"
    if fmt == "yaml":
        from golden.yamlfmt import load_yaml

        return decode_document(where, lambda: load_yaml(_utf8_text(data, where), source))
    if fmt == "corim":
        from golden.corim import import_corim

        return decode_document(where, lambda: import_corim(data, source))
    raise MalformedEvidence(f"unknown golden format {fmt!r}", where="golden set")


def decode_document(where: str, load: Callable[[], T]) -> T:
    """The decoder boundary of an uploaded policy document: any error of the loader or the
    library under it is one MalformedEvidence line naming ``where``."""
    try:
        return load()
    except ConfigurationError as exc:
        raise MalformedEvidence(str(exc), where=where) from None
    except RecursionError:
        raise MalformedEvidence("nested too deeply", where=where) from None
    except MalformedEvidence:
        raise
    except Exception as exc:  # the decoder boundary: any library error is malformed input
        first = (str(exc).splitlines() or [""])[0][:160]
        raise MalformedEvidence(f"{type(exc).__name__}: {first}", where=where) from None


def _utf8_text(data: bytes, where: str) -> str:
    """YAML must be UTF-8 (the YAML reader itself refuses control characters)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedEvidence(f"not UTF-8 at byte {exc.start}", where=where) from None


class GoldenRowLike(Protocol):
    """A stored golden version: an ORM ``GoldenSetRow`` or the catalog's copy of one."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def source(self) -> bytes: ...


def golden_from_row(row: GoldenRowLike) -> GoldenSet:
    gs = parse_golden(row.format, row.source, f"{row.name}@{row.version}")
    status: Status = "active"
    if row.status in ("retired", "revoked"):
        status = "retired" if row.status == "retired" else "revoked"
    return dataclasses.replace(gs, status=status, status_reason=row.reason or None)


def rows_key(rows: Sequence[GoldenRowLike]) -> tuple[tuple[str, str, str, str, int], ...]:
    """What identifies a node's golden rows: each version with the store's status and reason."""
    return tuple(sorted((r.name, r.version, r.status, r.reason, r.id) for r in rows))


def policy_for(svc: Services, rows: Sequence[GoldenRowLike]) -> CompiledPolicy:
    """Compile ``rows`` once per combination of versions and statuses; reuse it for a while.

    The key holds each row's status as read from the store now, so a retirement or revocation
    made by any verifier instance takes effect on the next appraisal. A compiled policy is reused
    only while the clock stays inside the window it was compiled for: never past the next
    ``valid_from``/``valid_until`` of any of its sets, nor for longer than ``policy_cache_ttl``.
    """
    key: Hashable = rows_key(rows)
    return compiled_cached(
        svc,
        key,
        lambda: [golden_from_row(r) for r in rows],
        lambda sets, now: compile_golden(sets, now=now),
    )


def compiled_cached(
    svc: Services,
    key: Hashable,
    load: Callable[[], Sequence[W]],
    build: Callable[[Sequence[W], dt.datetime], C],
) -> C:
    """``build(load(), now)`` once per ``key`` while the clock stays inside the window it was
    built for (``policy_for``'s rule, for golden sets and runtime policies alike)."""
    cached = svc.policies.get(key)
    now, now_mono = svc.now(), svc.monotonic()
    if cached is not None:
        loaded, built_at, until, policy = cached
        fresh = now_mono - loaded < svc.config.policy_cache_ttl
        if fresh and built_at <= now and (until is None or now < until):
            return cast(C, policy)
    sets = load()
    built = build(sets, now)
    svc.policies.put(key, (now_mono, now, next_boundary(sets, now), built))
    return built


def next_boundary(sets: Sequence[Windowed], now: dt.datetime) -> dt.datetime | None:
    """The first time after ``now`` at which one of ``sets`` enters or leaves its window."""
    times = [t for g in sets for t in (g.valid_from, g.valid_until) if t is not None and t > now]
    return min(times, default=None)


def assess(log: VerifiedBootLog, policy: CompiledPolicy) -> Assessment:
    verdict = appraise(log, policy)
    data = verdict.to_json()
    checks = list(data["checks"])
    booted = list(booted_versions(verdict.checks))
    return Assessment(verdict.status, verdict.reason, checks, list(policy.in_force), data, booted)


def assessment_of(verdict: dict[str, Any], golden: Sequence[str]) -> Assessment:
    """The assessment a stored verdict document records (for a reused verdict)."""
    return Assessment(
        VerdictStatus(verdict["status"]),
        str(verdict["reason"]),
        list(verdict["checks"]),
        list(golden),
        verdict,
        list(booted_versions_of_json(verdict["checks"])),
    )


def failed(status: VerdictStatus, code: str, message: str) -> Assessment:
    """An assessment for evidence that never reached the policy (replay mismatch, bad log…)."""
    check = {
        "id": code,
        "status": CheckStatus.FAIL if status == VerdictStatus.UNTRUSTED else CheckStatus.UNKNOWN,
        "reason": code,
        "message": message,
    }
    verdict = {"status": status, "reason": f"{code}: {message}", "checks": [check]}
    return Assessment(status, f"{code}: {message}", [check], [], verdict)
