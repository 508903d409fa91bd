"""Known firmware bugs: one table of workarounds, each applied to a copy and reported every time.

A workaround never makes anything pass silently. Each entry names the bug, a public reference, the
events it may touch, and the function applied to a copy of the evidence:

- a *coverage* workaround (``covered_part``) says which part of an event's data the buggy firmware
  hashed. The rest of the data is then *not* covered by the digest and nothing may be read from it
  (the appraisal accounts for such an event by its digest alone);
- a *replay* workaround (``unlogged``) names events the firmware extended without logging them;
  verify_log appends them to a copy of the PCR's events only when the quote then matches.

Every use becomes an AppliedWorkaround (which entry, PCR, events, what was seen) that the verdict,
``eventlog replay --json`` and ``eventlog show`` report; golden sets may deny an entry by its name.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..events import EventType

EBS_INVOCATION = b"Exit Boot Services Invocation"
EBS_SUCCESS = b"Exit Boot Services Returned with Success"
EBS_FAILURE = b"Exit Boot Services Returned with Failure"


@dataclass(frozen=True, slots=True)
class Workaround:
    """One known firmware bug and the one thing Assay does about it."""

    name: str
    summary: str
    reference: str
    event_types: frozenset[int]  # the event types it may touch
    pcrs: frozenset[int]  # the PCRs it may touch
    covered_part: Callable[[bytes], bytes | None] | None = None
    unlogged: tuple[bytes, ...] = ()

    def touches(self, pcr: int, event_type: int) -> bool:
        return pcr in self.pcrs and event_type in self.event_types


def _all_but_last_byte(data: bytes) -> bytes | None:
    return data[:-1] if data else None


def variable_payload(data: bytes) -> bytes | None:
    """VariableData of a well-formed UEFI_VARIABLE_DATA, or None when its lengths do not fit exactly."""
    if len(data) < 32:
        return None
    name_len, data_len = struct.unpack_from("<QQ", data, 16)
    start = 32 + 2 * name_len
    if start + data_len != len(data):
        return None
    return data[start:]


_PCR7 = frozenset({7})
_AUTHORITY = frozenset({int(EventType.EV_EFI_VARIABLE_AUTHORITY)})
_DRIVER_CONFIG = frozenset({int(EventType.EV_EFI_VARIABLE_DRIVER_CONFIG)})
_ACTION = frozenset({int(EventType.EV_EFI_ACTION)})

SHIM_AUTHORITY_ONE_BYTE_SHORT = Workaround(
    "shim-authority-one-byte-short",
    "old shim measured EV_EFI_VARIABLE_AUTHORITY data one byte short: digest = H(data[:-1])",
    "go-attestation#157, rhboot/shim#236",
    _AUTHORITY,
    _PCR7,
    covered_part=_all_but_last_byte,
)
VARIABLE_DATA_ONLY = Workaround(
    "variable-digest-over-data-only",
    "TPM 1.2-era firmware hashed only VariableData, not the whole UEFI_VARIABLE_DATA: the "
    "variable's name and GUID are not covered",
    "TCG EFI Protocol 1.22 vs PC Client PFP 1.04; go-attestation attest/secureboot.go",
    _DRIVER_CONFIG,
    frozenset({1, 7}),
    covered_part=variable_payload,
)
EBS_EVENTS_MISSING = Workaround(
    "exit-boot-services-events-missing",
    "firmware extended 'Exit Boot Services Invocation' and '... Returned with Success' into PCR5 "
    "without logging them",
    "go-attestation attest/eventlog_workarounds.go (ebsInvocation, ebsSuccess)",
    _ACTION,
    frozenset({5}),
    unlogged=(EBS_INVOCATION, EBS_SUCCESS),
)
EBS_FAILURE_MISSING = Workaround(
    "exit-boot-services-failure-missing",
    "firmware extended 'Exit Boot Services Invocation' and '... Returned with Failure' into PCR5 "
    "without logging them",
    "go-attestation attest/eventlog_workarounds.go (ebsInvocation, ebsFailure)",
    _ACTION,
    frozenset({5}),
    unlogged=(EBS_INVOCATION, EBS_FAILURE),
)
EBS_RETRY_MISSING = Workaround(
    "exit-boot-services-retry-missing",
    "firmware retried ExitBootServices (Invocation, Failure, Invocation, Success) and logged none "
    "of the four PCR5 events",
    "go-attestation attest/eventlog_workarounds.go (ebsInvocation, ebsFailure, ebsInvocation, "
    "ebsSuccess)",
    _ACTION,
    frozenset({5}),
    unlogged=(EBS_INVOCATION, EBS_FAILURE, EBS_INVOCATION, EBS_SUCCESS),
)

WORKAROUNDS: dict[str, Workaround] = {
    w.name: w
    for w in (
        SHIM_AUTHORITY_ONE_BYTE_SHORT,
        VARIABLE_DATA_ONLY,
        EBS_EVENTS_MISSING,
        EBS_FAILURE_MISSING,
        EBS_RETRY_MISSING,
    )
}
COVERAGE_WORKAROUNDS = tuple(w for w in WORKAROUNDS.values() if w.covered_part is not None)
REPLAY_WORKAROUNDS = tuple(w for w in WORKAROUNDS.values() if w.unlogged)


@dataclass(frozen=True, slots=True)
class AppliedWorkaround:
    """A workaround that was needed for this log: which, where, and what was seen."""

    workaround: Workaround
    pcr: int | None
    event: int | None
    detail: str
    events: tuple[int, ...] = ()  # every event it touched or added (``event`` is the first)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.workaround.name,
            "pcr": self.pcr,
            "event": self.event,
            "events": list(self.events) if self.events else [self.event],
            "detail": self.detail,
            "reference": self.workaround.reference,
        }
