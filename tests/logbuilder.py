"""Build small crypto-agile and SHA-1 event logs for tests (named attack vectors, fuzz seeds)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from assay.algorithms import HashAlg

BANKS = (HashAlg.SHA1, HashAlg.SHA256)


def spec_id(banks: Sequence[HashAlg] = BANKS, vendor: bytes = b"") -> bytes:
    body = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(banks))
    for alg in banks:
        body += struct.pack("<HH", int(alg), alg.digest_size)
    body += bytes((len(vendor),)) + vendor
    return struct.pack("<II20sI", 0, 3, bytes(20), len(body)) + body


def event2(
    pcr: int,
    etype: int,
    data: bytes,
    banks: Sequence[HashAlg] = BANKS,
    digests: dict[HashAlg, bytes] | None = None,
) -> bytes:
    """A TCG_PCR_EVENT2 whose digests are H(data) unless given."""
    out = struct.pack("<III", pcr, etype, len(banks))
    for alg in banks:
        digest = (digests or {}).get(alg, alg.hash(data))
        out += struct.pack("<H", int(alg)) + digest
    return out + struct.pack("<I", len(data)) + data


def sha1_event(pcr: int, etype: int, data: bytes, digest: bytes | None = None) -> bytes:
    d = HashAlg.SHA1.hash(data) if digest is None else digest
    return struct.pack("<II20sI", pcr, etype, d, len(data)) + data


EV_SEPARATOR = 4
EV_EFI_ACTION = 0x80000007
EV_S_CRTM_VERSION = 8
EV_NO_ACTION = 3


def simple_log(banks: Sequence[HashAlg] = BANKS) -> bytes:
    """S-CRTM version, an action in PCR5, separators in PCR0-7."""
    log = spec_id(banks)
    log += event2(0, EV_S_CRTM_VERSION, "1.0".encode("utf-16-le") + b"\0\0", banks)
    log += event2(5, EV_EFI_ACTION, b"Exit Boot Services Invocation", banks)
    for pcr in range(8):
        log += event2(pcr, EV_SEPARATOR, bytes(4), banks)
    return log


def variable_name(data: bytes) -> str:
    """The name of the UEFI_VARIABLE_DATA in ``data`` (whatever the digest covers)."""
    n = int.from_bytes(data[16:24], "little")
    return data[32 : 32 + 2 * n].decode("utf-16-le", "replace")


def variable_value(data: bytes) -> bytes:
    """The VariableData of the UEFI_VARIABLE_DATA in ``data``."""
    n, size = struct.unpack_from("<QQ", data, 16)
    return data[32 + 2 * n : 32 + 2 * n + size]


EFI_GLOBAL = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")  # EFI_GLOBAL_VARIABLE, raw


def variable_data(name: str, value: bytes, guid: bytes = EFI_GLOBAL) -> bytes:
    """A UEFI_VARIABLE_DATA: the vendor GUID's bytes, the name (UTF-16LE) and the value."""
    utf16 = name.encode("utf-16-le")
    return guid + struct.pack("<QQ", len(name), len(value)) + utf16 + value
