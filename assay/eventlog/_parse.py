"""TCG PC Client measured-boot event logs: parse untrusted bytes into an *unverified* EventLog.

Both formats are accepted: the SHA-1 ``TCG_PCR_EVENT`` log (TPM 1.2 and older TPM 2.0 firmware) and the
crypto-agile ``TCG_PCR_EVENT2`` log introduced by a Spec ID event. Nothing here does I/O or policy, and
nothing here is trusted: replay (``assay.replay``) and comparison with a verified quote turn an
EventLog into a VerifiedBootLog, and only that reaches golden policy.

The parser is strict and bounded: the whole log is capped (``MAX_LOG_SIZE``), every length is checked
against what remains before it is used, and every failure is a MalformedEvidence naming the event,
its byte offset and what was wrong. Event data is kept as raw bytes; decoding it is lazy
(``Event.decode()``), so the hot path (parse + replay) never touches UEFI structures.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..algorithms import HashAlg
from ..errors import MalformedEvidence
from ..events import EventType, event_type_name

MAX_LOG_SIZE = 1 << 20
"""Largest event log accepted (1 MiB); real logs in the corpus are 2-73 KiB."""

MAX_SPEC_ID_ALGORITHMS = 16
TRAILER_PCR = 0xFFFFFFFF
"""PCR index of Windows' trailing EV_NO_ACTION event: parsed, never replayed."""
MAX_PCR = 23

SPEC_ID_03 = b"Spec ID Event03\x00"
SPEC_ID_00 = b"Spec ID Event00\x00"
STARTUP_LOCALITY = b"StartupLocality\x00"

_EV_NO_ACTION = int(EventType.EV_NO_ACTION)
_EV_HCRTM = int(EventType.EV_EFI_HCRTM_EVENT)
_HEADER = struct.Struct("<II")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_SHA1_EVENT_HEADER = struct.Struct("<II20sI")
_KNOWN_ALGS = {int(a): a for a in HashAlg}
_EVENT_TYPE = operator.itemgetter(2)  # Event.event_type


class Event(NamedTuple):
    """One event as logged. Untrusted: nothing about it is verified until replay against a quote.

    ``digests`` maps each bank the event carries to its digest; an event may carry fewer banks than
    the log declares (real firmware does this), never more. ``data`` is the raw event data.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index; the spec calls it the index
    pcr: int
    event_type: int
    digests: Mapping[HashAlg, bytes]
    data: bytes
    offset: int

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)

    @property
    def is_measured(self) -> bool:
        """Whether replay extends this event (never EV_NO_ACTION, never the 0xFFFFFFFF trailer)."""
        return self.event_type != _EV_NO_ACTION and self.pcr != TRAILER_PCR

    def decode(self) -> Any:
        """The decoded event data (``assay.eventdata``), or an Undecodable saying why not."""
        from ..eventdata import decode_event_data

        try:
            return decode_event_data(self.event_type, self.data)
        except MalformedEvidence as exc:
            return Undecodable(self.event_type, exc.reason)


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Event data of a known type that does not parse; policy treats it as unknown, never as a pass."""

    event_type: int
    reason: str

    def describe(self) -> str:
        return f"undecodable {event_type_name(self.event_type)} data: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "undecodable", "reason": self.reason}


@dataclass(frozen=True, slots=True)
class SpecIdAlgorithm:
    alg_id: int
    digest_size: int

    @property
    def known(self) -> HashAlg | None:
        return _KNOWN_ALGS.get(self.alg_id)


@dataclass(frozen=True, slots=True)
class SpecId:
    """The Spec ID (``TCG_EfiSpecIdEvent``) header event."""

    signature: str
    platform_class: int
    spec_version: tuple[int, int, int]
    uintn_size: int
    algorithms: tuple[SpecIdAlgorithm, ...]
    vendor_info: bytes


@dataclass(frozen=True, slots=True)
class EventLog:
    """A parsed, *unverified* event log.

    ``format`` is ``"crypto_agile"`` or ``"sha1"``; ``banks`` are the banks the header declares
    that Assay knows (SHA-1 alone for a SHA-1 log). ``events`` starts with event 0, the Spec ID
    header of an agile log (EV_NO_ACTION, never replayed).
    """

    format: str
    banks: tuple[HashAlg, ...]
    spec_id: SpecId | None
    events: tuple[Event, ...]
    startup_locality: int | None
    hcrtm: bool
    size: int

    def events_in(self, pcr: int) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.pcr == pcr)


def parse_event_log(data: bytes, *, max_size: int = MAX_LOG_SIZE) -> EventLog:
    """Parse a binary event log (the format of ``binary_bios_measurements``).

    Steps: 1. bound the size; 2. read the first event in SHA-1 format; 3. if it is a Spec ID 03
    event, parse the header and read the rest as crypto-agile events, otherwise read SHA-1 events;
    4. note StartupLocality and H-CRTM, which set PCR0's starting value for replay.
    """
    data = bytes(data)
    # 1. Size bounds.
    size = len(data)
    if size == 0:
        raise MalformedEvidence("event log is empty")
    if size > max_size:
        raise MalformedEvidence(f"event log is {size} bytes, more than the limit of {max_size}")
    # 2. The first event is always a TCG_PCR_EVENT.
    first, pos = _read_sha1_event(data, 0, 0)
    spec_id: SpecId | None = None
    if first.event_type == _EV_NO_ACTION and first.pcr == 0 and first.data.startswith(SPEC_ID_03):
        # 3. Crypto-agile log.
        spec_id = _parse_spec_id(first.data, 0)
        banks = tuple(a.known for a in spec_id.algorithms if a.known is not None)
        events = [first, *_read_agile_events(data, pos, spec_id)]
        fmt = "crypto_agile"
    else:
        if first.event_type == _EV_NO_ACTION and first.data.startswith(SPEC_ID_00):
            spec_id = _parse_spec_id(first.data, 0, legacy=True)
        events = [first]
        index = 1
        while pos < size:
            event, pos = _read_sha1_event(data, pos, index)
            events.append(event)
            index += 1
        banks = (HashAlg.SHA1,)
        fmt = "sha1"
    # 4. PCR0's starting value (the event types in one C-level pass, then only EV_NO_ACTIONs).
    types = list(map(_EVENT_TYPE, events))
    locality = _startup_locality(events, types)
    hcrtm = _EV_HCRTM in types
    return EventLog(
        format=fmt,
        banks=banks,
        spec_id=spec_id,
        events=tuple(events),
        startup_locality=locality,
        hcrtm=hcrtm,
        size=size,
    )


def _check_pcr(pcr: int, index: int, offset: int) -> None:
    if pcr > MAX_PCR and pcr != TRAILER_PCR:
        raise MalformedEvidence(
            f"PCR index {pcr} out of range", where=f"event {index}", offset=offset
        )


def _read_sha1_event(data: bytes, pos: int, index: int) -> tuple[Event, int]:
    end = len(data)
    if pos + 32 > end:
        raise MalformedEvidence(
            f"truncated TCG_PCR_EVENT header ({end - pos} of 32 bytes)",
            where=f"event {index}",
            offset=pos,
        )
    pcr, etype, digest, dsize = _SHA1_EVENT_HEADER.unpack_from(data, pos)
    _check_pcr(pcr, index, pos)
    body = pos + 32
    if dsize > end - body:
        raise MalformedEvidence(
            f"event data size {dsize} overruns the log ({end - body} bytes left)",
            where=f"event {index}",
            offset=pos + 28,
        )
    event = Event(index, pcr, etype, {HashAlg.SHA1: digest}, data[body : body + dsize], pos)
    return event, body + dsize


def _parse_spec_id(data: bytes, index: int, *, legacy: bool = False) -> SpecId:
    """Parse TCG_EfiSpecIDEvent; its size must be exactly what its fields say (no dangling bytes)."""
    where = f"event {index} (Spec ID)"
    size = len(data)
    if legacy:
        # TCG_EfiSpecIdEventStruct (TPM 1.2): no algorithm list, only vendor info.
        if size < 25:
            raise MalformedEvidence("Spec ID Event00 shorter than 25 bytes", where=where)
        vsize = data[24]
        if 25 + vsize != size:
            raise MalformedEvidence(f"Spec ID size {size} != computed {25 + vsize}", where=where)
        return SpecId(
            signature="Spec ID Event00",
            platform_class=_U32.unpack_from(data, 16)[0],
            spec_version=(data[21], data[20], data[22]),
            uintn_size=data[23],
            algorithms=(),
            vendor_info=data[25:],
        )
    if size < 28:
        raise MalformedEvidence(f"Spec ID event data is {size} bytes, shorter than 28", where=where)
    platform_class = _U32.unpack_from(data, 16)[0]
    minor, major, errata, uintn = data[20], data[21], data[22], data[23]
    count = _U32.unpack_from(data, 24)[0]
    if count == 0 or count > MAX_SPEC_ID_ALGORITHMS:
        raise MalformedEvidence(f"Spec ID declares {count} algorithms", where=where, offset=24)
    need = 28 + 4 * count + 1
    if size < need:
        raise MalformedEvidence(f"Spec ID event data is {size} bytes, needs {need}", where=where)
    algs: list[SpecIdAlgorithm] = []
    seen: set[int] = set()
    for i in range(count):
        alg_id, dsize = struct.unpack_from("<HH", data, 28 + 4 * i)
        known = _KNOWN_ALGS.get(alg_id)
        if alg_id in seen:
            raise MalformedEvidence(f"Spec ID declares algorithm 0x{alg_id:04x} twice", where=where)
        if known is not None and dsize != known.digest_size:
            raise MalformedEvidence(
                f"Spec ID gives {known.bank} digest size {dsize}, expected {known.digest_size}",
                where=where,
            )
        if dsize == 0 or dsize > 128:
            raise MalformedEvidence(f"Spec ID digest size {dsize} for 0x{alg_id:04x}", where=where)
        seen.add(alg_id)
        algs.append(SpecIdAlgorithm(alg_id, dsize))
    vsize = data[need - 1]
    if need + vsize != size:
        raise MalformedEvidence(
            f"Spec ID event size {size} != computed {need + vsize} (vendorInfoSize={vsize})",
            where=where,
        )
    return SpecId(
        signature="Spec ID Event03",
        platform_class=platform_class,
        spec_version=(major, minor, errata),
        uintn_size=uintn,
        algorithms=tuple(algs),
        vendor_info=data[need:],
    )


def _read_agile_events(data: bytes, pos: int, spec_id: SpecId) -> list[Event]:
    """Read TCG_PCR_EVENT2 records until the end of the log.

    Fast path: an event carrying every declared digest in header order has a fixed layout, read with
    one ``unpack_from``; anything else (fewer digests, another order) takes the general path.
    """
    end = len(data)
    algs = spec_id.algorithms
    count_all = len(algs)
    layout = struct.Struct("<III" + "".join(f"H{a.digest_size}s" for a in algs) + "I")
    fixed = layout.size
    expect_ids = tuple(a.alg_id for a in algs)
    keys = tuple(a.known for a in algs)
    all_known = all(k is not None for k in keys)
    k0 = keys[0]
    k1 = keys[1] if count_all > 1 else k0
    k2 = keys[2] if count_all > 2 else k0
    new_event = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hot path
    unpack = layout.unpack_from
    events: list[Event] = []
    append = events.append
    if all_known and count_all <= 4:
        pos = _read_uniform_events(data, pos, layout, keys, expect_ids, events)
    index = len(events) + 1
    while pos < end:
        if all_known and pos + fixed <= end:
            fields = unpack(data, pos)
            if fields[2] == count_all and fields[3:-1:2] == expect_ids:
                pcr = fields[0]
                if pcr > MAX_PCR and pcr != TRAILER_PCR:
                    _check_pcr(pcr, index, pos)
                dsize = fields[-1]
                body = pos + fixed
                if dsize > end - body:
                    raise MalformedEvidence(
                        f"event data size {dsize} overruns the log ({end - body} bytes left)",
                        where=f"event {index}",
                        offset=body - 4,
                    )
                if count_all == 2:
                    digests = {k0: fields[4], k1: fields[6]}
                elif count_all == 1:
                    digests = {k0: fields[4]}
                elif count_all == 3:
                    digests = {k0: fields[4], k1: fields[6], k2: fields[8]}
                else:
                    digests = dict(zip(keys, fields[4:-1:2], strict=True))
                append(
                    new_event(
                        Event, (index, pcr, fields[1], digests, data[body : body + dsize], pos)
                    )
                )
                pos = body + dsize
                index += 1
                continue
        event, pos = _read_agile_event_slow(data, pos, index, spec_id)
        append(event)
        index += 1
    return events


def _read_uniform_events(
    data: bytes,
    pos: int,
    layout: struct.Struct,
    keys: tuple[HashAlg | None, ...],
    ids: tuple[int, ...],
    events: list[Event],
) -> int:
    """The fast path's fast path, for the usual logs (one to four known banks): events carrying
    every declared digest in header order, each unpacked into names at once, appended to ``events``
    until the first event of another shape (or the end). Returns where it stopped."""
    end = len(data)
    fixed = layout.size
    last = end - fixed
    unpack = layout.unpack_from
    append = events.append
    new_event = tuple.__new__
    index = len(events) + 1
    a, b, c, d = (*keys, None, None, None)[:4]
    w, x, y, z = (*ids, -1, -1, -1)[:4]
    count = len(ids)
    while pos <= last:
        if count == 2:
            pcr, etype, n, wi, da, xi, db, dsize = unpack(data, pos)
            if n != 2 or wi != w or xi != x:
                break
            digests = {a: da, b: db}
        elif count == 3:
            pcr, etype, n, wi, da, xi, db, yi, dc, dsize = unpack(data, pos)
            if n != 3 or wi != w or xi != x or yi != y:
                break
            digests = {a: da, b: db, c: dc}
        elif count == 1:
            pcr, etype, n, wi, da, dsize = unpack(data, pos)
            if n != 1 or wi != w:
                break
            digests = {a: da}
        else:
            pcr, etype, n, wi, da, xi, db, yi, dc, zi, dd, dsize = unpack(data, pos)
            if n != 4 or wi != w or xi != x or yi != y or zi != z:
                break
            digests = {a: da, b: db, c: dc, d: dd}
        if pcr > MAX_PCR and pcr != TRAILER_PCR:
            _check_pcr(pcr, index, pos)
        body = pos + fixed
        if dsize > end - body:
            raise MalformedEvidence(
                f"event data size {dsize} overruns the log ({end - body} bytes left)",
                where=f"event {index}",
                offset=body - 4,
            )
        append(new_event(Event, (index, pcr, etype, digests, data[body : body + dsize], pos)))
        pos = body + dsize
        index += 1
    return pos


def _read_agile_event_slow(data: bytes, pos: int, index: int, spec_id: SpecId) -> tuple[Event, int]:
    """One TCG_PCR_EVENT2 of any shape, every length checked."""
    end = len(data)
    start = pos
    where = f"event {index}"
    sizes = {a.alg_id: a.digest_size for a in spec_id.algorithms}
    if pos + 12 > end:
        raise MalformedEvidence(
            f"truncated TCG_PCR_EVENT2 header ({end - pos} bytes left)", where=where, offset=pos
        )
    pcr, etype = _HEADER.unpack_from(data, pos)
    _check_pcr(pcr, index, pos)
    count = _U32.unpack_from(data, pos + 8)[0]
    if count > len(sizes):
        raise MalformedEvidence(
            f"{count} digests, the header declares {len(sizes)}", where=where, offset=pos + 8
        )
    pos += 12
    digests: dict[HashAlg, bytes] = {}
    seen: set[int] = set()
    for _ in range(count):
        if pos + 2 > end:
            raise MalformedEvidence("truncated digest", where=where, offset=pos)
        alg_id = _U16.unpack_from(data, pos)[0]
        dsize = sizes.get(alg_id)
        if dsize is None:
            raise MalformedEvidence(
                f"digest algorithm 0x{alg_id:04x} not declared in the Spec ID header",
                where=where,
                offset=pos,
            )
        if alg_id in seen:
            raise MalformedEvidence(
                f"two digests for algorithm 0x{alg_id:04x}", where=where, offset=pos
            )
        seen.add(alg_id)
        pos += 2
        if pos + dsize > end:
            raise MalformedEvidence("truncated digest", where=where, offset=pos)
        alg = _KNOWN_ALGS.get(alg_id)
        if alg is not None:
            digests[alg] = data[pos : pos + dsize]
        pos += dsize
    if pos + 4 > end:
        raise MalformedEvidence("truncated event size", where=where, offset=pos)
    dsize = _U32.unpack_from(data, pos)[0]
    pos += 4
    if dsize > end - pos:
        raise MalformedEvidence(
            f"event data size {dsize} overruns the log ({end - pos} bytes left)",
            where=where,
            offset=pos - 4,
        )
    return Event(index, pcr, etype, digests, data[pos : pos + dsize], start), pos + dsize


def _startup_locality(events: list[Event], types: list[int]) -> int | None:
    """The locality of a StartupLocality EV_NO_ACTION event in PCR0, if the log has one
    (``types`` are the events' types, in order)."""
    at = -1
    while True:
        try:
            at = types.index(_EV_NO_ACTION, at + 1)
        except ValueError:
            return None
        event = events[at]
        if event.pcr == 0 and event.data.startswith(STARTUP_LOCALITY):
            if len(event.data) != 17:
                raise MalformedEvidence(
                    f"StartupLocality event data is {len(event.data)} bytes, expected 17",
                    where=f"event {event.index}",
                    offset=event.offset,
                )
            locality = event.data[16]
            if locality not in (0, 3, 4):
                raise MalformedEvidence(
                    f"StartupLocality {locality} is not 0, 3 or 4", where=f"event {event.index}"
                )
            return locality
