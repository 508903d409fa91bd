"""The PC Client Platform Firmware Profile's rules that do not depend on any golden set.

Which event types may appear in which PCR (§10.4.1, widened to what real firmware in the corpus
does), what may follow the separator in PCR0–7, and the strings whose digests the profile fixes
(separators, EFI actions) or that are known by their digest alone (ExitBootServices, the unsafe
platform states). The verifier's policy and golden capture both read them here.
"""

from __future__ import annotations

import re

from .algorithms import HashAlg
from .eventlog import BootLog, Event
from .events import EventType as ET

EBS_INVOCATION = b"Exit Boot Services Invocation"
EBS_RETURNS = (
    b"Exit Boot Services Returned with Success",
    b"Exit Boot Services Returned with Failure",
)
EBS_ACTIONS = (EBS_INVOCATION, *EBS_RETURNS)
DEBUG_MODE = b"UEFI Debug Mode"
DMA_DISABLED = b"DMA Protection Disabled"
PLATFORM_STATES = (DEBUG_MODE, DMA_DISABLED)
SEPARATOR_VALUES = (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff")
_SEPARATOR_DIGESTS: dict[HashAlg, frozenset[bytes]] = {}
_TEXT_DIGESTS: dict[tuple[HashAlg, bytes], frozenset[bytes]] = {}

# Event types allowed in each PCR (PC Client PFP §10.4.1 and what real firmware in the corpus
# does). A set may add vendor types per PCR with extra_event_types.
_FW_PCR0 = {
    ET.EV_S_CRTM_VERSION,
    ET.EV_S_CRTM_CONTENTS,
    ET.EV_POST_CODE,
    ET.EV_POST_CODE2,
    ET.EV_EFI_PLATFORM_FIRMWARE_BLOB,
    ET.EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    ET.EV_NONHOST_CODE,
    ET.EV_NONHOST_CONFIG,
    ET.EV_NONHOST_INFO,
    ET.EV_EFI_HANDOFF_TABLES,
    ET.EV_EFI_HANDOFF_TABLES2,
    ET.EV_CPU_MICROCODE,
    ET.EV_EFI_HCRTM_EVENT,
    ET.EV_EFI_SPDM_FIRMWARE_BLOB,
    ET.EV_EFI_SPDM_FIRMWARE_CONFIG,
    ET.EV_SEPARATOR,
}
_OS = {
    ET.EV_IPL,
    ET.EV_EVENT_TAG,
    ET.EV_COMPACT_HASH,
    ET.EV_SEPARATOR,
    ET.EV_EFI_ACTION,
    ET.EV_ACTION,
}
ALLOWED_TYPES: dict[int, frozenset[int]] = {
    0: frozenset(_FW_PCR0),
    1: frozenset(
        {
            ET.EV_EFI_VARIABLE_DRIVER_CONFIG,
            ET.EV_EFI_VARIABLE_BOOT,
            ET.EV_EFI_VARIABLE_BOOT2,
            ET.EV_EFI_HANDOFF_TABLES,
            ET.EV_EFI_HANDOFF_TABLES2,
            ET.EV_PLATFORM_CONFIG_FLAGS,
            ET.EV_TABLE_OF_DEVICES,
            ET.EV_CPU_MICROCODE,
            ET.EV_NONHOST_CONFIG,
            ET.EV_EVENT_TAG,
            ET.EV_EFI_SPDM_FIRMWARE_CONFIG,
            ET.EV_EFI_ACTION,
            ET.EV_SEPARATOR,
        }
    ),
    2: frozenset(
        {
            ET.EV_EFI_BOOT_SERVICES_DRIVER,
            ET.EV_EFI_RUNTIME_SERVICES_DRIVER,
            ET.EV_EFI_BOOT_SERVICES_APPLICATION,
            ET.EV_EFI_PLATFORM_FIRMWARE_BLOB,
            ET.EV_EFI_PLATFORM_FIRMWARE_BLOB2,
            ET.EV_EFI_SPDM_FIRMWARE_BLOB,
            ET.EV_EFI_GPT_EVENT,
            ET.EV_NONHOST_CODE,
            ET.EV_NONHOST_INFO,
            ET.EV_EVENT_TAG,
            ET.EV_POST_CODE,
            ET.EV_SEPARATOR,
        }
    ),
    3: frozenset(
        {
            ET.EV_EFI_VARIABLE_DRIVER_CONFIG,
            ET.EV_EFI_SPDM_FIRMWARE_CONFIG,
            ET.EV_NONHOST_CONFIG,
            ET.EV_SEPARATOR,
        }
    ),
    4: frozenset(
        {
            ET.EV_EFI_BOOT_SERVICES_APPLICATION,
            ET.EV_EFI_BOOT_SERVICES_DRIVER,
            ET.EV_EFI_ACTION,
            ET.EV_ACTION,
            ET.EV_IPL,
            ET.EV_SEPARATOR,
        }
    ),
    5: frozenset(
        {
            ET.EV_EFI_VARIABLE_BOOT,
            ET.EV_EFI_VARIABLE_BOOT2,
            ET.EV_EFI_GPT_EVENT,
            ET.EV_EFI_GPT_EVENT2,
            ET.EV_EFI_ACTION,
            ET.EV_ACTION,
            ET.EV_IPL_PARTITION_DATA,
            ET.EV_SEPARATOR,
        }
    ),
    6: frozenset({ET.EV_ACTION, ET.EV_EFI_ACTION, ET.EV_COMPACT_HASH, ET.EV_SEPARATOR}),
    7: frozenset(
        {
            ET.EV_EFI_VARIABLE_DRIVER_CONFIG,
            ET.EV_EFI_VARIABLE_AUTHORITY,
            ET.EV_EFI_ACTION,
            ET.EV_EFI_SPDM_DEVICE_POLICY,
            ET.EV_EFI_SPDM_DEVICE_AUTHORITY,
            ET.EV_SEPARATOR,
        }
    ),
}
ALLOWED_TYPES.update({pcr: frozenset(_OS) for pcr in range(8, 24)})
# What may follow the separator in PCR0–7 (firmware measures the rest before it).
AFTER_SEPARATOR: dict[int, frozenset[int]] = {
    0: frozenset(),
    1: frozenset(
        {
            ET.EV_EFI_VARIABLE_BOOT,
            ET.EV_EFI_VARIABLE_BOOT2,
            ET.EV_EFI_HANDOFF_TABLES,
            ET.EV_EFI_HANDOFF_TABLES2,
            ET.EV_PLATFORM_CONFIG_FLAGS,
        }
    ),
    2: frozenset(
        {
            ET.EV_EFI_BOOT_SERVICES_DRIVER,
            ET.EV_EFI_RUNTIME_SERVICES_DRIVER,
            ET.EV_EFI_BOOT_SERVICES_APPLICATION,
            ET.EV_EFI_GPT_EVENT,
        }
    ),
    3: frozenset(),
    4: frozenset(
        {
            ET.EV_EFI_BOOT_SERVICES_APPLICATION,
            ET.EV_EFI_BOOT_SERVICES_DRIVER,
            ET.EV_EFI_ACTION,
            ET.EV_ACTION,
            ET.EV_IPL,
        }
    ),
    5: frozenset(
        {ET.EV_EFI_GPT_EVENT, ET.EV_EFI_GPT_EVENT2, ET.EV_EFI_ACTION, ET.EV_IPL_PARTITION_DATA}
    ),
    6: frozenset(),
    7: frozenset({ET.EV_EFI_VARIABLE_AUTHORITY, ET.EV_EFI_SPDM_DEVICE_AUTHORITY}),
}


def separator_digests(bank: HashAlg) -> frozenset[bytes]:
    """The digests of the two separator values in ``bank``."""
    got = _SEPARATOR_DIGESTS.get(bank)
    if got is None:
        got = _SEPARATOR_DIGESTS[bank] = frozenset(bank.hash(v) for v in SEPARATOR_VALUES)
    return got


_SPECIAL: dict[HashAlg, dict[bytes, bytes]] = {}


def special_digests(bank: HashAlg) -> dict[bytes, bytes]:
    """Digest → string for the strings known by their digest: ExitBootServices and the unsafe
    platform states, with and without their NUL."""
    got = _SPECIAL.get(bank)
    if got is None:
        got = _SPECIAL[bank] = {
            d: text for text in (*EBS_ACTIONS, *PLATFORM_STATES) for d in text_digests(bank, text)
        }
    return got


# EFI/legacy action strings whose digests the PC Client PFP fixes (§10.4.4), per PCR, as real
# firmware in the corpus measures them ("Calling EFI Application…" also appears in PCR5 there).
FIXED_ACTIONS: dict[int, tuple[bytes, ...]] = {
    4: (
        b"Calling EFI Application from Boot Option",
        b"Returning from EFI Application from Boot Option",
        b"Calling INT 19h",
        b"Returned INT 19h",
        b"Return via INT 18h",
    ),
    5: (*EBS_ACTIONS, b"Calling EFI Application from Boot Option"),
}
_FIXED: dict[tuple[HashAlg, int], frozenset[bytes]] = {}


def fixed_digests(bank: HashAlg, pcr: int) -> frozenset[bytes]:
    """Spec-fixed digests for ``pcr``: separators in PCR0–7 and the fixed action strings."""
    key = (bank, pcr)
    got = _FIXED.get(key)
    if got is None:
        found: set[bytes] = set(separator_digests(bank)) if pcr <= 7 else set()
        for action in FIXED_ACTIONS.get(pcr, ()):
            found |= text_digests(bank, action)
        got = _FIXED[key] = frozenset(found)
    return got


def text_digests(bank: HashAlg, text: bytes) -> frozenset[bytes]:
    """The digests a firmware string is measured as in ``bank``: without and with its NUL."""
    key = (bank, text)
    got = _TEXT_DIGESTS.get(key)
    if got is None:
        got = _TEXT_DIGESTS[key] = frozenset((bank.hash(text), bank.hash(text + b"\x00")))
    return got


# Parameterised legacy-BIOS actions (PC Client PFP §10.4.4): spec-defined text with a number or a
# device name in it, so known by the text their digest covers rather than by one fixed digest.
ACTION_PATTERNS: dict[int, re.Pattern[bytes]] = {
    4: re.compile(rb"Booting (?:BCV|BEV) Device [ -~]{1,64}"),
    6: re.compile(rb"Wake Event [0-9]{1,3}"),
}


def fixed_action_text(vlog: BootLog, e: Event) -> bool:
    """Whether ``e`` is a parameterised legacy action whose whole text its digest covers."""
    pattern = ACTION_PATTERNS.get(e.pcr)
    return (
        pattern is not None
        and vlog.fully_covered(e)
        and pattern.fullmatch(e.data.rstrip(b"\x00")) is not None
    )
