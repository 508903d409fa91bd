"""Event-log surgery for attack tests: what a node that lies about its log can write.

A lying node keeps every digest it really extended (the quote is genuine) and rewrites the rest:
event types, event data the digest does not cover, and — when the TPM was extended with something
evil — the story around the evil digest. Each helper returns new log bytes; the input is unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from assay.algorithms import HashAlg
from assay.eventlog import Event, parse_event_log
from assay.uefi.guid import Guid

from ..conftest import CORPUS

SB_LOG = (CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin").read_bytes()
BANKS = (HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512)
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"


def events(data: bytes) -> tuple[Event, ...]:
    return parse_event_log(data).events


def _end(data: bytes, index: int) -> int:
    evs = events(data)
    return evs[index + 1].offset if index + 1 < len(evs) else len(data)


def record(
    pcr: int,
    etype: int,
    data: bytes,
    *,
    digests: Mapping[HashAlg, bytes] | None = None,
    measured: bytes | None = None,
) -> bytes:
    """A TCG_PCR_EVENT2 in the four banks of the Debian log; digests of ``measured`` (default:
    ``data``) unless given."""
    out = struct.pack("<III", pcr, etype, len(BANKS))
    for alg in BANKS:
        digest = (digests or {}).get(alg) or alg.hash(data if measured is None else measured)
        out += struct.pack("<H", int(alg)) + digest
    return out + struct.pack("<I", len(data)) + data


def rewrite(
    data: bytes,
    index: int,
    *,
    etype: int | None = None,
    pcr: int | None = None,
    body: bytes | None = None,
) -> bytes:
    """Event ``index`` with another type, PCR or data; its digests stay exactly as they were."""
    e = events(data)[index]
    new = record(
        e.pcr if pcr is None else pcr,
        e.event_type if etype is None else etype,
        e.data if body is None else body,
        digests=e.digests,
    )
    return data[: e.offset] + new + data[_end(data, index) :]


def replace(data: bytes, index: int, new_record: bytes) -> bytes:
    e = events(data)[index]
    return data[: e.offset] + new_record + data[_end(data, index) :]


def insert_before(data: bytes, index: int, new_record: bytes) -> bytes:
    at = events(data)[index].offset
    return data[:at] + new_record + data[at:]


def remove(data: bytes, index: int) -> bytes:
    return data[: events(data)[index].offset] + data[_end(data, index) :]


def raw_event(data: bytes, index: int) -> bytes:
    return data[events(data)[index].offset : _end(data, index)]


def variable(name: str, value: bytes, guid: str = EFI_GLOBAL) -> bytes:
    """UEFI_VARIABLE_DATA: GUID, name length, data length, UTF-16 name, data."""
    encoded = name.encode("utf-16-le")
    return Guid.parse(guid).raw + struct.pack("<QQ", len(name), len(value)) + encoded + value
