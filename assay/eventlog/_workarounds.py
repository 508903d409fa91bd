"""Known firmware bugs: a named table of workarounds, each applied explicitly and reported.

A workaround never makes anything pass silently: every time one is used, an AppliedWorkaround naming
it, the PCR or event, and what was found goes into the result that the verdict and the operator see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Workaround:
    name: str
    summary: str
    reference: str


SHIM_AUTHORITY_ONE_BYTE_SHORT = Workaround(
    "shim-authority-one-byte-short",
    "old shim measured EV_EFI_VARIABLE_AUTHORITY data one byte short: digest = H(data[:-1])",
    "go-attestation#157, rhboot/shim#236",
)
EBS_EVENTS_MISSING = Workaround(
    "exit-boot-services-events-missing",
    "firmware extended the two ExitBootServices EV_EFI_ACTION events into PCR5 without logging them",
    "go-attestation attest/eventlog_workarounds.go (ebsInvocation/ebsSuccess)",
)
VARIABLE_DATA_ONLY = Workaround(
    "variable-digest-over-data-only",
    "TPM 1.2-era firmware hashed only VariableData, not the whole UEFI_VARIABLE_DATA",
    "TCG EFI Protocol 1.22 vs PC Client PFP 1.04",
)
WORKAROUNDS = {
    w.name: w
    for w in (
        SHIM_AUTHORITY_ONE_BYTE_SHORT,
        EBS_EVENTS_MISSING,
        VARIABLE_DATA_ONLY,
    )
}

EBS_INVOCATION = b"Exit Boot Services Invocation"
EBS_SUCCESS = b"Exit Boot Services Returned with Success"


@dataclass(frozen=True, slots=True)
class AppliedWorkaround:
    """A workaround that was needed for this log: which, where, and what was seen."""

    workaround: Workaround
    pcr: int | None
    event: int | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.workaround.name,
            "pcr": self.pcr,
            "event": self.event,
            "detail": self.detail,
            "reference": self.workaround.reference,
        }
