"""Replay an event log into PCR values, and verify it against a verified quote.

``replay(log)`` computes what the PCRs would hold if every measured event was extended as logged.
``verify_log(log, quote, bank)`` compares that with the PCR values a ``VerifiedQuote`` vouches for
and only then returns a VerifiedBootLog: what golden policy judges a node by. Events in PCRs the
quote does not cover are left out of it (a value the TPM did not sign proves nothing). Offline
review of a file (no quote) gets a different type, ReviewedBootLog, from
``assume_quoted_for_review``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from ..algorithms import HashAlg
from ..errors import VerificationFailed
from ..events import EventType
from ..tpm2.quote import VerifiedQuote
from ._caches import LogCaches
from ._coverage import data_covered
from ._parse import TRAILER_PCR, Event, EventLog
from ._workarounds import (
    COVERAGE_WORKAROUNDS,
    EBS_INVOCATION,
    REPLAY_WORKAROUNDS,
    AppliedWorkaround,
)

R = TypeVar("R")
L = TypeVar("L", "VerifiedBootLog", "ReviewedBootLog")

_EV_NO_ACTION = int(EventType.EV_NO_ACTION)
_EV_EFI_ACTION = int(EventType.EV_EFI_ACTION)
_PCR = operator.itemgetter(1)  # Event.pcr
# (PCR, event type) pairs a coverage workaround may touch: the only events worth asking.
_COVERAGE_TOUCHES = frozenset(
    (pcr, t) for w in COVERAGE_WORKAROUNDS for pcr in w.pcrs for t in w.event_types
)


@dataclass(frozen=True, slots=True)
class Replay:
    """PCR values computed from a log. ``pcrs`` holds every PCR that has measured events.

    ``incomplete`` lists, per bank, the PCRs where some event carried no digest for that bank: their
    replayed value is not what the TPM holds, so they are left out of ``pcrs`` for that bank.
    """

    pcrs: dict[HashAlg, dict[int, bytes]]
    start_locality: int
    incomplete: dict[HashAlg, frozenset[int]]
    warnings: tuple[str, ...]
    chains: dict[HashAlg, dict[int, tuple[bytes, ...]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """For a bank replayed with the verifier's caches: each complete PCR's digests, in the order
    they were extended (what its value is a function of)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "banks": {
                alg.bank: {str(p): v.hex() for p, v in sorted(values.items())}
                for alg, values in self.pcrs.items()
            },
            "start_locality": self.start_locality,
            "warnings": list(self.warnings),
        }


def measured_events(log: EventLog) -> Iterator[Event]:
    """The events that replay extends: never EV_NO_ACTION, never the 0xFFFFFFFF trailer."""
    for event in log.events:
        if event.event_type != _EV_NO_ACTION and event.pcr != TRAILER_PCR:
            yield event


def initial_value(alg: HashAlg, pcr: int, start_locality: int) -> bytes:
    if pcr == 0 and start_locality:
        return bytes(alg.digest_size - 1) + bytes((start_locality,))
    return bytes(alg.digest_size)


def _reset_values(alg: HashAlg, pcr: int, locality: int) -> tuple[bytes, ...]:
    """Values an unextended PCR may hold: PCR17-22 reset to all ones until a DRTM launch zeroes them."""
    if 17 <= pcr <= 22:
        return (b"\xff" * alg.digest_size, bytes(alg.digest_size))
    return (initial_value(alg, pcr, locality),)


def start_locality(log: EventLog) -> int:
    """PCR0's starting value: 4 after an H-CRTM sequence, else the StartupLocality (default 0)."""
    if log.hcrtm:
        return 4
    return log.startup_locality or 0


def replay(log: EventLog, banks: Iterable[HashAlg] | None = None) -> Replay:
    """Extend every measured event's digests, per bank, from the PCRs' reset values."""
    return _replay(log, _measured(log), log.banks if banks is None else banks)


def _measured(log: EventLog) -> list[Event]:
    """``measured_events`` as a list, with the comparisons inline (replay's hot path)."""
    return [e for e in log.events if e[2] != _EV_NO_ACTION and e[1] != TRAILER_PCR]


def _replay(
    log: EventLog, events: list[Event], banks: Iterable[HashAlg], caches: LogCaches | None = None
) -> Replay:
    locality = start_locality(log)
    result: dict[HashAlg, dict[int, bytes]] = {}
    incomplete: dict[HashAlg, frozenset[int]] = {}
    warnings: list[str] = []
    chains: dict[HashAlg, dict[int, tuple[bytes, ...]]] = {}
    for alg in banks:
        if caches is None:
            values, missing = _replay_bank(events, alg, locality)
        else:
            values, missing, chains[alg] = _replay_bank_kept(events, alg, locality, caches)
        for pcr in missing:
            values.pop(pcr, None)
        result[alg] = values
        if missing:
            incomplete[alg] = frozenset(missing)
            warnings.append(
                f"{alg.bank}: PCR {', '.join(map(str, sorted(missing)))} not replayable "
                "(events without a digest in this bank)"
            )
    return Replay(result, locality, incomplete, tuple(warnings), chains)


def _replay_bank(
    events: list[Event], alg: HashAlg, locality: int
) -> tuple[dict[int, bytes], set[int]]:
    h = alg.hasher
    # Every PCR with events starts at its reset value (PCR0 at the locality's).
    values = dict.fromkeys(map(_PCR, events), bytes(alg.digest_size))
    if 0 in values:
        values[0] = initial_value(alg, 0, locality)
    missing: set[int] = set()
    for _, pcr, _, digests, _, _ in events:
        digest = digests.get(alg)
        if digest is None:
            missing.add(pcr)
            continue
        values[pcr] = h(values[pcr] + digest).digest()
    return values, missing  # a PCR in ``missing`` has no replayable value: the caller drops it


def _replay_bank_kept(
    events: list[Event], alg: HashAlg, locality: int, caches: LogCaches
) -> tuple[dict[int, bytes], set[int], dict[int, tuple[bytes, ...]]]:
    """:func:`_replay_bank` with each PCR's chain looked up in ``caches.chains`` first: the same
    answers (a chain is kept only as this function computed it, keyed by everything it is a
    function of), without a SHA-256 call per extend for sequences seen before; and the chains of
    the PCRs it could replay."""
    chains: dict[int, list[bytes]] = {}
    missing: set[int] = set()
    for _, pcr, _, digests, _, _ in events:
        digest = digests.get(alg)
        if digest is None:
            missing.add(pcr)
            chains.setdefault(pcr, [])
            continue
        chain = chains.get(pcr)
        if chain is None:
            chains[pcr] = [digest]
        else:
            chain.append(digest)
    h = alg.hasher
    reset = bytes(alg.digest_size)
    kept = caches.chains
    values: dict[int, bytes] = {}
    replayed: dict[int, tuple[bytes, ...]] = {}
    for pcr, chain in chains.items():
        start = initial_value(alg, 0, locality) if pcr == 0 else reset
        if pcr in missing:  # not replayable: the caller drops it, and it is not kept
            values[pcr] = start
            continue
        sequence = replayed[pcr] = tuple(chain)
        key = (alg, start, sequence)
        value = kept.get(key)
        if value is None:
            value = start
            for digest in chain:
                value = h(value + digest).digest()
            caches.keep_chain(key, value)
        values[pcr] = value
    return values, missing, replayed


@dataclass(frozen=True, slots=True)
class _BootLog:
    """Events of one bank with the PCR values they are taken to replay to. What that proves depends
    on the subclass: :class:`VerifiedBootLog` (a verified quote vouches for the values) or
    :class:`ReviewedBootLog` (nothing does; offline review only).

    ``events`` are the measured events in those PCRs (log order); ``pcrs`` the values;
    ``pcrs_outside_log`` quoted PCRs that the log has no events for but are not at their reset value
    (extended by something that does not log here, such as IMA); ``unquoted_pcrs`` PCRs the log has
    events for that the quote does not cover (their events are not in ``events``). ``caches`` are
    the verifier's content caches (shared across logs); ``chains``, when the replay used them, the
    digests of each PCR's ``events`` in order (a PCR a workaround added unlogged events to is not
    there); ``_memo`` what was computed from this log.
    """

    bank: HashAlg
    pcrs: Mapping[int, bytes]
    events: tuple[Event, ...]
    all_events: tuple[Event, ...]
    pcrs_outside_log: frozenset[int]
    unquoted_pcrs: frozenset[int]
    workarounds: tuple[AppliedWorkaround, ...]
    warnings: tuple[str, ...]
    start_locality: int
    caches: LogCaches = field(compare=False, repr=False)
    chains: Mapping[int, tuple[bytes, ...]] = field(default_factory=dict, compare=False, repr=False)
    _memo: dict[tuple[str, int], Any] = field(default_factory=dict, compare=False, repr=False)

    def data_covered(self, event: Event) -> bool | None:
        """Whether the event's digest is the hash of its data (None: the spec does not say it is).

        Event data not covered by the digest must not be trusted: a boot-application event's device
        path, for instance, is just text the firmware wrote next to the digest.
        """
        key = ("covered", event.index)
        result = self._memo.get(key)
        if result is None:
            result = self._memo[key] = data_covered(event, self.bank, self.caches.coverage)
        return result[0]

    def coverage_workaround(self, event: Event) -> AppliedWorkaround | None:
        """The coverage workaround this event needed, if any (its data is then only partly covered)."""
        self.data_covered(event)
        applied: AppliedWorkaround | None = self._memo[("covered", event.index)][1]
        return applied

    def fully_covered(self, event: Event) -> bool:
        """Whether the digest is the hash of *all* the event data, with no workaround: only then may
        the appraisal read a value (a name, a text, a key database) out of the data. An
        EV_EFI_VARIABLE_BOOT hashed over its VariableData only is covered but not fully."""
        self.data_covered(event)
        whole: bool = self._memo[("covered", event.index)][2]
        return whole

    def all_workarounds(self) -> tuple[AppliedWorkaround, ...]:
        """Every workaround this log needed: replay ones (from verify_log), then coverage ones for
        the events in quoted PCRs, in log order."""
        return self.memo("workarounds", _all_workarounds)

    def decoded(self, event: Event) -> Any:
        """The event's decoded data, decoded once per log (the service keeps verified logs per boot)."""
        key = ("decoded", event.index)
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = event.decode()
            return value

    def events_in(self, pcr: int) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.pcr == pcr)

    def unvouched(self, pcrs: frozenset[int]) -> frozenset[int]:
        """Which of ``pcrs`` have no value here that the evidence vouches for."""
        raise NotImplementedError

    def memo(self, key: str, factory: Callable[[Self], R]) -> R:
        """Compute something from this log once (e.g. appraisal facts) and keep it with it.

        The service caches verified logs per boot, so whatever is memoised here is computed once per
        boot, not once per attestation.
        """
        slot = ("memo:" + key, -1)
        try:
            return self._memo[slot]  # type: ignore[no-any-return]
        except KeyError:
            value = self._memo[slot] = factory(self)
            return value


@dataclass(frozen=True, slots=True)
class VerifiedBootLog(_BootLog):
    """Events whose PCRs a verified quote vouches for, in one bank: what golden policy judges a
    node by. Only :func:`verify_log`, given a :class:`~assay.tpm2.VerifiedQuote`, makes one."""

    def unvouched(self, pcrs: frozenset[int]) -> frozenset[int]:
        """The PCRs of ``pcrs`` the quote does not cover."""
        return pcrs - self.pcrs.keys()


@dataclass(frozen=True, slots=True)
class ReviewedBootLog(_BootLog):
    """A log whose own replay is *taken* as the quoted state, for offline review: it proves nothing
    about a node (anyone can write a log that replays to itself). Only
    :func:`assume_quoted_for_review` makes one; the service never does."""

    def unvouched(self, pcrs: frozenset[int]) -> frozenset[int]:
        """Nothing: a review takes every PCR the log extends as quoted, and no other as relevant."""
        return frozenset()


BootLog = VerifiedBootLog | ReviewedBootLog
"""What an appraisal can judge: a verified log (a node's evidence) or a reviewed one (a file)."""


def _all_workarounds(vlog: _BootLog) -> tuple[AppliedWorkaround, ...]:
    found = [
        w
        for e in vlog.events
        if (e.pcr, e.event_type) in _COVERAGE_TOUCHES
        and (w := vlog.coverage_workaround(e)) is not None
    ]
    return (*vlog.workarounds, *found)


def verify_log(
    log: EventLog, quote: VerifiedQuote, bank: HashAlg, *, caches: LogCaches | None = None
) -> VerifiedBootLog:
    """Replay ``log`` and check it against the PCR values of a verified quote in ``bank``.

    Steps: 1. the bank must be quoted and carried by the log; 2. replay that bank; 3. every quoted PCR
    that the log has events for must equal the replay (trying the named workarounds, each reported);
    4. keep only events in quoted PCRs. Raises VerificationFailed naming the PCR, got and expected.
    ``caches`` are the caller's content caches (a fresh private set when None).
    """
    return _check_against(VerifiedBootLog, log, quote.pcrs.get(bank), bank, caches)


def assume_quoted_for_review(
    log: EventLog, bank: HashAlg, *, caches: LogCaches | None = None
) -> ReviewedBootLog:
    """Treat the log's own replay as if a quote had vouched for it — for offline review only.

    This proves nothing about a node (anyone can write a log that replays to itself); it exists so an
    operator can appraise a captured log against golden sets (``eventlog check``, ``golden capture``).
    """
    if bank not in log.banks:
        raise VerificationFailed(
            f"the event log has no {bank.bank} digests", code="bank_not_in_log"
        )
    result = replay(log, (bank,))
    return _check_against(ReviewedBootLog, log, result.pcrs[bank], bank, caches)


def _check_against(
    kind: type[L],
    log: EventLog,
    quoted: Mapping[int, bytes] | None,
    bank: HashAlg,
    caches: LogCaches | None,
) -> L:
    """verify_log's steps 1–4 against ``quoted`` (the values of ``bank``), as a ``kind`` of log."""
    # 1. Bank.
    if quoted is None:
        raise VerificationFailed(
            f"the quote does not cover the {bank.bank} bank", code="bank_not_quoted"
        )
    if bank not in log.banks:
        raise VerificationFailed(
            f"the event log has no {bank.bank} digests", code="bank_not_in_log"
        )
    # 2. Replay.
    measured = _measured(log)
    result = _replay(log, measured, (bank,), caches)
    replayed = result.pcrs[bank]
    incomplete = result.incomplete.get(bank, frozenset())
    workarounds: list[AppliedWorkaround] = []
    unlogged: list[Event] = []
    outside: set[int] = set()
    # 3. Compare.
    for pcr, value in sorted(quoted.items()):
        if pcr in incomplete:
            raise VerificationFailed(
                f"PCR{pcr} ({bank.bank}): events without a {bank.bank} digest, cannot replay",
                code="pcr_replay_incomplete",
            )
        got = replayed.get(pcr)
        if got is None:
            if value not in _reset_values(bank, pcr, result.start_locality):
                outside.add(pcr)
            continue
        if got == value:
            continue
        fixed = _try_replay_workarounds(log, bank, pcr, got, value, len(log.events) + len(unlogged))
        if fixed is None:
            raise VerificationFailed(
                f"PCR{pcr} ({bank.bank}): event log replays to {got.hex()}, quote has {value.hex()}",
                code="pcr_replay_mismatch",
            )
        workarounds.append(fixed[0])
        unlogged.extend(fixed[1])
    # 4. Keep what the quote covers (with the events a workaround showed were extended unlogged).
    unquoted = frozenset(set(map(_PCR, measured)).difference(quoted))
    events = (
        tuple(measured) if not unquoted else tuple(e for e in measured if e.pcr in quoted)
    ) + tuple(unlogged)
    chains = result.chains.get(bank, {})
    if unquoted or unlogged:
        added = set(map(_PCR, unlogged))
        chains = {p: c for p, c in chains.items() if p in quoted and p not in added}
    return kind(
        bank=bank,
        pcrs=dict(quoted),
        events=events,
        all_events=log.events,
        pcrs_outside_log=frozenset(outside),
        unquoted_pcrs=unquoted,
        workarounds=tuple(workarounds),
        warnings=result.warnings,
        start_locality=result.start_locality,
        caches=LogCaches() if caches is None else caches,
        chains=chains,
    )


def _try_replay_workarounds(
    log: EventLog, bank: HashAlg, pcr: int, got: bytes, want: bytes, next_index: int
) -> tuple[AppliedWorkaround, tuple[Event, ...]] | None:
    """The table's replay workarounds for ``pcr``: events the firmware extended without logging.

    Each is tried on a copy: the unlogged events are appended after the PCR's logged ones, and the
    first sequence that makes the replay equal the quote is kept, as events numbered after the log's
    own so the appraisal accounts for them like any other (their digests are spec-fixed strings).
    """
    logged = {e.data for e in log.events if e.pcr == pcr and e.event_type == _EV_EFI_ACTION}
    if EBS_INVOCATION in logged:  # the firmware logs ExitBootServices: nothing is missing
        return None
    h = bank.hasher
    for w in REPLAY_WORKAROUNDS:
        if pcr not in w.pcrs:
            continue
        value = got
        for data in w.unlogged:
            value = h(value + bank.hash(data)).digest()
        if value != want:
            continue
        added = tuple(
            Event(next_index + i, pcr, _EV_EFI_ACTION, {bank: bank.hash(data)}, data, -1)
            for i, data in enumerate(w.unlogged)
        )
        detail = (
            f"PCR{pcr} matches the quote once {len(added)} unlogged EV_EFI_ACTION events are added "
            f"(events {added[0].index}-{added[-1].index}: "
            + ", ".join(repr(d.decode()) for d in w.unlogged)
            + ")"
        )
        return AppliedWorkaround(
            w, pcr, added[0].index, detail, tuple(e.index for e in added)
        ), added
    return None
