"""Is an event's data covered by its digest? Event data that is not must never be trusted.

The spec makes the digest the hash of the event data for some event types (separators, actions,
variables, GPT, S-CRTM version, GRUB's command strings); for others (boot applications, firmware
blobs, files loaded by GRUB) the digest is of something else and the data is only a description.
"""

from __future__ import annotations

import struct

from ..algorithms import HashAlg
from ..events import EventType
from ._parse import Event
from ._workarounds import SHIM_AUTHORITY_ONE_BYTE_SHORT, VARIABLE_DATA_ONLY, AppliedWorkaround

Coverage = tuple[bool | None, AppliedWorkaround | None]

_WHOLE_DATA = frozenset(
    {
        EventType.EV_SEPARATOR,
        EventType.EV_EFI_ACTION,
        EventType.EV_ACTION,
        EventType.EV_EFI_GPT_EVENT,
        EventType.EV_EFI_GPT_EVENT2,
        EventType.EV_S_CRTM_VERSION,
        EventType.EV_EFI_VARIABLE_BOOT2,
        EventType.EV_COMPACT_HASH,
    }
)
# GRUB measures the command without its prefix (and, upstream, without the NUL).
_IPL_PREFIXES = (b"grub_cmd: ", b"kernel_cmdline: ", b"grub_kernel_cmdline ", b"grub_cmd ")


def data_covered(event: Event, bank: HashAlg) -> Coverage:
    """(covered, workaround used): True/False where the spec defines the digest over the data, else None."""
    digest = event.digests.get(bank)
    if digest is None:
        return False, None
    etype = event.event_type
    data = event.data
    if etype in _WHOLE_DATA:
        return bank.hash(data) == digest, None
    if etype == EventType.EV_EFI_VARIABLE_DRIVER_CONFIG:
        if bank.hash(data) == digest:
            return True, None
        if _payload_matches(data, digest, bank):
            return True, AppliedWorkaround(
                VARIABLE_DATA_ONLY, event.pcr, event.index, "digest over VariableData"
            )
        return False, None
    if etype == EventType.EV_EFI_VARIABLE_BOOT:
        # The PC Client profile has EV_EFI_VARIABLE_BOOT hashed over VariableData (edk2 does this).
        return bank.hash(data) == digest or _payload_matches(data, digest, bank), None
    if etype == EventType.EV_EFI_VARIABLE_AUTHORITY:
        if bank.hash(data) == digest:
            return True, None
        if data and bank.hash(data[:-1]) == digest:
            return True, AppliedWorkaround(
                SHIM_AUTHORITY_ONE_BYTE_SHORT,
                event.pcr,
                event.index,
                "digest over data minus its last byte",
            )
        return False, None
    if etype == EventType.EV_IPL:
        return _ipl_covered(data, digest, bank), None
    return None, None


def _ipl_covered(data: bytes, digest: bytes, bank: HashAlg) -> bool | None:
    """GRUB commands must be covered; other EV_IPL strings (file names, UKI sections) usually are not."""
    h = bank.hash
    if data.startswith(b"grub") or data.startswith(b"kernel_cmdline"):
        for prefix in _IPL_PREFIXES:
            if data.startswith(prefix):
                # Upstream GRUB hashes the string without its NUL (the common case: tried first).
                rest = data[len(prefix) :]
                stripped = rest.rstrip(b"\x00")
                return h(stripped) == digest or (stripped != rest and h(rest) == digest)
    stripped = data.rstrip(b"\x00")
    if h(stripped) == digest or (stripped != data and h(data) == digest):
        return True
    return None


def _variable_payload(data: bytes) -> bytes | None:
    """VariableData of a well-formed UEFI_VARIABLE_DATA, or None when its lengths do not fit exactly."""
    if len(data) < 32:
        return None
    name_len, data_len = struct.unpack_from("<QQ", data, 16)
    start = 32 + 2 * name_len
    if start + data_len != len(data):
        return None
    return data[start:]


def _payload_matches(data: bytes, digest: bytes, bank: HashAlg) -> bool:
    payload = _variable_payload(data)
    return payload is not None and bank.hash(payload) == digest
