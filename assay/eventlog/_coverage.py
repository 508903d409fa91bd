"""Is an event's data covered by its digest? Event data that is not must never be trusted.

The spec makes the digest the hash of the event data for some event types (separators, actions,
variables, GPT, S-CRTM version, GRUB's command strings); for others (boot applications, firmware
blobs, files loaded by GRUB) the digest is of something else and the data is only a description.

The answer is a pure function of (bank, event type, digest, data), so it is kept by content across
logs in the verifier's :class:`LogCaches`: nodes with the same firmware log byte-identical Secure
Boot databases, separators and actions, and hashing a 30 KB dbx once per fleet instead of once per
boot is most of an appraisal's cost.
"""

from __future__ import annotations

from ..algorithms import HashAlg
from ..events import EventType
from ._caches import ContentCache
from ._caches import Coverage as _Result
from ._parse import Event
from ._workarounds import COVERAGE_WORKAROUNDS, AppliedWorkaround, variable_payload

Coverage = tuple[bool | None, AppliedWorkaround | None, bool]
"""(covered, the workaround it needed, whether the digest is of *all* the data): see data_covered."""

VARIABLE_DATA_ONLY = "digest over VariableData only: the variable's name and GUID are not covered"
"""The detail of an EV_EFI_VARIABLE_BOOT whose digest covers its VariableData only (the PC Client
profile's own rule, edk2's way): covered, with no workaround, but not whole."""

# Plain ints: an enum attribute lookup per event costs more than the comparison it feeds.
_VARIABLE_DRIVER_CONFIG = int(EventType.EV_EFI_VARIABLE_DRIVER_CONFIG)
_VARIABLE_BOOT = int(EventType.EV_EFI_VARIABLE_BOOT)
_VARIABLE_AUTHORITY = int(EventType.EV_EFI_VARIABLE_AUTHORITY)
_IPL = int(EventType.EV_IPL)
_WHOLE_DATA = frozenset(
    int(t)
    for t in (
        EventType.EV_SEPARATOR,
        EventType.EV_EFI_ACTION,
        EventType.EV_ACTION,
        EventType.EV_EFI_GPT_EVENT,
        EventType.EV_EFI_GPT_EVENT2,
        EventType.EV_S_CRTM_VERSION,
        EventType.EV_EFI_VARIABLE_BOOT2,
        EventType.EV_COMPACT_HASH,
    )
)
_CHECKED = _WHOLE_DATA | {_VARIABLE_DRIVER_CONFIG, _VARIABLE_BOOT, _VARIABLE_AUTHORITY, _IPL}
CHECKED_TYPES = frozenset(_CHECKED)
"""The event types whose digest the spec defines over the data: ``data_covered`` is None for others."""
# GRUB measures the command without its prefix (and, upstream, without the NUL).
# The prefixes GRUB writes before the string it measures (not covered by the digest).
GRUB_PREFIXES = (b"grub_cmd: ", b"kernel_cmdline: ", b"grub_kernel_cmdline ", b"grub_cmd ")


def data_covered(event: Event, bank: HashAlg, cache: ContentCache[_Result]) -> Coverage:
    """(covered, workaround used, whole): covered is True/False where the spec defines the digest
    over the data, else None; whole is True only when the digest is the hash of every byte of the
    data, with no workaround (only then may a value be read out of any part of it)."""
    digest = event.digests.get(bank)
    if digest is None:
        return False, None, False
    etype = event.event_type
    if etype not in _CHECKED:
        return None, None, False
    data = event.data
    result = cache.get((bank, etype, digest), data)
    if result is None:
        result = coverage_of(etype, data, digest, bank, cache)
    covered, workaround, detail = result
    if workaround is None:
        return covered, None, covered is True and not detail
    return covered, AppliedWorkaround(workaround, event.pcr, event.index, detail), False


def coverage_of(
    etype: int, data: bytes, digest: bytes, bank: HashAlg, cache: ContentCache[_Result]
) -> _Result:
    """(covered, workaround, detail) of an event of a checked type that ``cache`` has not got (a
    caller that looked already), computed and kept there. The detail is empty exactly when a
    covered event's digest is of all its data."""
    result = _covered(etype, data, digest, bank)
    cache.put((bank, etype, digest), data, result)
    return result


def _covered(etype: int, data: bytes, digest: bytes, bank: HashAlg) -> _Result:
    if etype in _WHOLE_DATA:
        return bank.hash(data) == digest, None, ""
    if etype == _IPL:
        return _ipl_covered(data, digest, bank), None, ""
    if etype == _VARIABLE_BOOT:
        # The PC Client profile has EV_EFI_VARIABLE_BOOT hashed over VariableData (edk2 does this,
        # three in four of the corpus's): the spec's own rule, not a bug, tried first; the whole
        # structure otherwise. Over VariableData the name and GUID are not covered, which the
        # detail says (so the event is covered but not whole: nothing reads its name).
        payload = variable_payload(data)
        if payload is not None and bank.hash(payload) == digest:
            return True, None, VARIABLE_DATA_ONLY
        return bank.hash(data) == digest, None, ""
    if bank.hash(data) == digest:
        return True, None, ""
    return _workaround_covered(etype, data, digest, bank)


def _workaround_covered(etype: int, data: bytes, digest: bytes, bank: HashAlg) -> _Result:
    """The table's coverage workarounds, tried on a copy of the data; the first that explains the
    digest is reported (and what it left out is uncovered)."""
    for w in COVERAGE_WORKAROUNDS:
        if etype not in w.event_types or w.covered_part is None:
            continue
        part = w.covered_part(bytes(data))
        if part is not None and bank.hash(part) == digest:
            return True, w, f"digest over {len(part)} of the event's {len(data)} data bytes"
    return False, None, ""


def _ipl_covered(data: bytes, digest: bytes, bank: HashAlg) -> bool | None:
    """GRUB commands must be covered; other EV_IPL strings (file names, UKI sections) usually are not."""
    h = bank.hash
    if data.startswith(b"grub") or data.startswith(b"kernel_cmdline"):
        for prefix in GRUB_PREFIXES:
            if data.startswith(prefix):
                # Upstream GRUB hashes the string without its NUL (the common case: tried first).
                rest = data[len(prefix) :]
                stripped = rest.rstrip(b"\x00")
                return h(stripped) == digest or (stripped != rest and h(rest) == digest)
    stripped = data.rstrip(b"\x00")
    if h(stripped) == digest or (stripped != data and h(data) == digest):
        return True
    return None
