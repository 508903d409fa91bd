"""Fixed-layout UEFI / TCG structures found in event data, parsed strictly from untrusted bytes.

Every length is checked against what remains before slicing; structures with an exact size reject
trailing bytes; counts read from the input are capped before anything is allocated from them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from .._reader import Reader
from ..errors import MalformedEvidence
from .devicepath import device_path_to_text
from .guid import Guid

MAX_NAME_CHARS = 1024
MAX_GPT_PARTITIONS = 1024
MAX_HANDOFF_TABLES = 1024
_LENGTHS = struct.Struct("<QQ")  # UEFI_VARIABLE_DATA's UnicodeNameLength, VariableDataLength


def _utf16(raw: bytes, r: Reader, what: str) -> str:
    try:
        return raw.decode("utf-16-le")
    except UnicodeDecodeError:
        raise r.fail(f"{what} is not valid UTF-16LE") from None


def _utf16z(r: Reader, what: str, max_chars: int = MAX_NAME_CHARS) -> str:
    """A NUL-terminated UTF-16LE string read from ``r`` (the NUL is consumed, not returned)."""
    start = r.pos
    units = bytearray()
    while True:
        if len(units) // 2 >= max_chars:
            raise r.fail(f"{what} longer than {max_chars} characters", start)
        unit = r.take(2, f"{what} (no terminating NUL)")
        if unit == b"\x00\x00":
            return _utf16(bytes(units), r, what)
        units += unit


# --- UEFI_VARIABLE_DATA ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UefiVariableData:
    """UEFI_VARIABLE_DATA (EV_EFI_VARIABLE_*): which variable, and its raw value."""

    guid: Guid
    name: str
    data: bytes
    trailing: bytes = b""


def parse_variable_data(
    data: bytes, *, max_trailing: int = 0, where: str = "UEFI_VARIABLE_DATA"
) -> UefiVariableData:
    """Parse UEFI_VARIABLE_DATA; the lengths must account for every byte, except that up to
    ``max_trailing`` bytes after the value are returned in ``trailing`` (callers allow it for known
    firmware behaviour: shim's struct padding, several variables logged in one event)."""
    r = Reader(data, where)
    guid = Guid(r.take(16, "VariableName GUID"))
    name_len = r.u64le("UnicodeNameLength")
    data_len = r.u64le("VariableDataLength")
    if name_len > MAX_NAME_CHARS:
        raise r.fail(f"UnicodeNameLength {name_len} exceeds {MAX_NAME_CHARS}", 16)
    if 2 * name_len > r.remaining:
        raise r.fail(
            f"UnicodeNameLength {name_len} needs {2 * name_len} bytes, {r.remaining} left", 16
        )
    if data_len > r.remaining - 2 * name_len:
        raise r.fail(
            f"VariableDataLength {data_len} overruns the event "
            f"({r.remaining - 2 * name_len} bytes left)",
            24,
        )
    name = _utf16(r.take(2 * name_len, "UnicodeName"), r, "UnicodeName")
    value = r.take(data_len, "VariableData")
    if r.remaining > max_trailing:
        r.expect_end("UEFI_VARIABLE_DATA")
    return UefiVariableData(guid, name, value, r.take(r.remaining, "trailing bytes"))


def variable_name_value(data: bytes) -> tuple[str, bytes] | None:
    """(name, value) of ``data`` when :func:`parse_variable_data` (no trailing bytes allowed) would
    accept it, else None: the same checks, without building the object or an error message, for
    callers that only need the answer (the appraisal reads every Secure Boot variable this way)."""
    size = len(data)
    if size < 32:
        return None
    name_len, data_len = _LENGTHS.unpack_from(data, 16)
    if name_len > MAX_NAME_CHARS or 32 + 2 * name_len + data_len != size:
        return None
    end = 32 + 2 * name_len
    try:
        return data[32:end].decode("utf-16-le"), data[end:]
    except UnicodeDecodeError:
        return None


# --- EFI_LOAD_OPTION ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadOption:
    """EFI_LOAD_OPTION (the value of Boot####)."""

    attributes: int
    description: str
    device_path: bytes
    device_path_text: str
    optional_data: bytes

    @property
    def active(self) -> bool:
        return bool(self.attributes & 0x1)

    def to_json(self) -> dict[str, Any]:
        return {
            "attributes": self.attributes,
            "active": self.active,
            "description": self.description,
            "device_path": self.device_path_text,
            "optional_data": self.optional_data.hex(),
        }


def parse_load_option(data: bytes, *, where: str = "EFI_LOAD_OPTION") -> LoadOption:
    r = Reader(data, where)
    attributes = r.u32le("Attributes")
    path_len = r.u16le("FilePathListLength")
    description = _utf16z(r, "Description")
    path = r.take(path_len, "FilePathList")
    optional = r.take(r.remaining, "OptionalData")
    text = device_path_to_text(path, where=f"{where} FilePathList")
    return LoadOption(attributes, description, path, text, optional)


# --- UEFI_IMAGE_LOAD_EVENT ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageLoadEvent:
    """UEFI_IMAGE_LOAD_EVENT (EV_EFI_BOOT_SERVICES_APPLICATION/_DRIVER, RUNTIME_SERVICES_DRIVER)."""

    location: int
    length: int
    link_time_address: int
    device_path: bytes
    device_path_text: str
    padding: bytes = b""


MAX_IMAGE_EVENT_PADDING = 15
"""shim logs sizeof(EFI_IMAGE_LOAD_EVENT) + path length: up to 15 bytes of struct padding (often
uninitialised) follow the device path. More than that is malformed."""


def parse_image_load_event(data: bytes, *, where: str = "UEFI_IMAGE_LOAD_EVENT") -> ImageLoadEvent:
    r = Reader(data, where)
    location = r.u64le("ImageLocationInMemory")
    length = r.u64le("ImageLengthInMemory")
    link = r.u64le("ImageLinkTimeAddress")
    path_len = r.u64le("LengthOfDevicePath")
    if not 0 <= r.remaining - path_len <= MAX_IMAGE_EVENT_PADDING:
        raise r.fail(
            f"LengthOfDevicePath {path_len} does not match the {r.remaining} bytes left", 24
        )
    path = r.take(path_len, "DevicePath")
    padding = r.take(r.remaining, "padding")
    return ImageLoadEvent(
        location,
        length,
        link,
        path,
        device_path_to_text(path, where=f"{where} DevicePath"),
        padding,
    )


# --- UEFI_GPT_DATA --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GptHeader:
    revision: int
    header_size: int
    header_crc32: int
    my_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: Guid
    partition_entry_lba: int
    number_of_partition_entries: int
    size_of_partition_entry: int
    partition_entry_array_crc32: int


@dataclass(frozen=True, slots=True)
class GptPartition:
    type_guid: Guid
    unique_guid: Guid
    first_lba: int
    last_lba: int
    attributes: int
    name: str

    def to_json(self) -> dict[str, Any]:
        return {
            "type_guid": str(self.type_guid),
            "unique_guid": str(self.unique_guid),
            "first_lba": self.first_lba,
            "last_lba": self.last_lba,
            "attributes": self.attributes,
            "name": self.name,
        }


@dataclass(frozen=True, slots=True)
class GptEvent:
    header: GptHeader
    partitions: tuple[GptPartition, ...]


def parse_gpt_event(data: bytes, *, where: str = "UEFI_GPT_DATA") -> GptEvent:
    """UEFI_GPT_DATA: the 92-byte EFI partition header, a u64 count, then that many entries of
    SizeOfPartitionEntry bytes each (capped, and checked against the data before any is read)."""
    r = Reader(data, where)
    if r.take(8, "Signature") != b"EFI PART":
        raise r.fail("GPT header signature is not 'EFI PART'", 0)
    revision, header_size, crc = r.u32le("Revision"), r.u32le("HeaderSize"), r.u32le("HeaderCRC32")
    r.u32le("Reserved")
    lbas = [r.u64le(n) for n in ("MyLBA", "AlternateLBA", "FirstUsableLBA", "LastUsableLBA")]
    disk_guid = Guid(r.take(16, "DiskGUID"))
    entry_lba = r.u64le("PartitionEntryLBA")
    n_entries, entry_size = r.u32le("NumberOfPartitionEntries"), r.u32le("SizeOfPartitionEntry")
    array_crc = r.u32le("PartitionEntryArrayCRC32")
    if header_size < 92:
        raise r.fail(f"HeaderSize {header_size} is smaller than 92", 12)
    header = GptHeader(
        revision,
        header_size,
        crc,
        lbas[0],
        lbas[1],
        lbas[2],
        lbas[3],
        disk_guid,
        entry_lba,
        n_entries,
        entry_size,
        array_crc,
    )
    count_at = r.pos
    count = r.u64le("NumberOfPartitions")
    if count > MAX_GPT_PARTITIONS:
        raise r.fail(f"NumberOfPartitions {count} exceeds {MAX_GPT_PARTITIONS}", count_at)
    if count and entry_size < 128:
        raise r.fail(f"SizeOfPartitionEntry {entry_size} is smaller than 128", 84)
    if count * entry_size != r.remaining:
        raise r.fail(
            f"{count} partitions of {entry_size} bytes do not match the {r.remaining} bytes left",
            count_at,
        )
    partitions: list[GptPartition] = []
    for _ in range(count):
        entry = r.take(entry_size, "partition entry")
        er = Reader(entry, f"{where} partition {len(partitions)}")
        type_guid, unique = Guid(er.take(16, "PartitionTypeGUID")), Guid(er.take(16, "GUID"))
        first, last, attrs = er.u64le("StartingLBA"), er.u64le("EndingLBA"), er.u64le("Attributes")
        name = _utf16(er.take(72, "PartitionName"), er, "PartitionName").split("\x00", 1)[0]
        partitions.append(GptPartition(type_guid, unique, first, last, attrs, name))
    return GptEvent(header, tuple(partitions))


# --- Handoff tables, firmware blobs ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandoffTables:
    """UEFI_HANDOFF_TABLE_POINTERS(2): configuration tables (GUID + address) handed to the OS."""

    description: str | None
    tables: tuple[tuple[Guid, int], ...]


def parse_handoff_tables(
    data: bytes, *, with_description: bool = False, where: str = "UEFI_HANDOFF_TABLE_POINTERS"
) -> HandoffTables:
    r = Reader(data, where)
    description = None
    if with_description:
        size = r.u8("TableDescriptionSize")
        description = _ascii(r.take(size, "TableDescription"))
    count_at = r.pos
    count = r.u64le("NumberOfTables")
    if count > MAX_HANDOFF_TABLES or count * 24 != r.remaining:
        raise r.fail(
            f"NumberOfTables {count} does not match the {r.remaining} bytes left", count_at
        )
    tables = tuple((Guid(r.take(16, "VendorGuid")), r.u64le("VendorTable")) for _ in range(count))
    return HandoffTables(description, tables)


@dataclass(frozen=True, slots=True)
class FirmwareBlob:
    """UEFI_PLATFORM_FIRMWARE_BLOB(2): where a measured firmware volume was in memory."""

    base: int
    length: int
    description: str | None = None


def parse_firmware_blob(data: bytes, *, where: str = "UEFI_PLATFORM_FIRMWARE_BLOB") -> FirmwareBlob:
    r = Reader(data, where)
    base, length = r.u64le("BlobBase"), r.u64le("BlobLength")
    r.expect_end(where)
    return FirmwareBlob(base, length)


def parse_firmware_blob2(
    data: bytes, *, where: str = "UEFI_PLATFORM_FIRMWARE_BLOB2"
) -> FirmwareBlob:
    r = Reader(data, where)
    description = _ascii(r.take(r.u8("BlobDescriptionSize"), "BlobDescription"))
    base, length = r.u64le("BlobBase"), r.u64le("BlobLength")
    r.expect_end(where)
    return FirmwareBlob(base, length, description)


def _ascii(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace")


# --- EV_NO_ACTION payloads ------------------------------------------------------------------------

STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
SP800_155_SIGNATURES = (b"SP800-155 Event\x00", b"SP800-155 Event2", b"SP800-155 Event3")


def parse_startup_locality(data: bytes, *, where: str = "StartupLocality event") -> int:
    if len(data) != 17 or not data.startswith(STARTUP_LOCALITY_SIGNATURE):
        raise MalformedEvidence(
            f"must be 'StartupLocality\\0' + 1 byte, got {len(data)} bytes", where=where, offset=0
        )
    return data[16]


@dataclass(frozen=True, slots=True)
class Sp800155Event:
    """TCG_Sp800_155_PlatformId_Event (1, 2 and 3): the platform's reference-manifest identity."""

    version: int
    vendor_id: int
    reference_manifest_guid: Guid
    platform_manufacturer: str
    platform_model: str
    platform_version: str
    firmware_manufacturer: str
    firmware_manufacturer_id: int
    firmware_version: str
    rim_locator_type: int | None = None
    rim_locator: bytes = b""
    platform_cert_locator_type: int | None = None
    platform_cert_locator: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "vendor_id": self.vendor_id,
            "reference_manifest_guid": str(self.reference_manifest_guid),
            "platform_manufacturer": self.platform_manufacturer,
            "platform_model": self.platform_model,
            "platform_version": self.platform_version,
            "firmware_manufacturer": self.firmware_manufacturer,
            "firmware_manufacturer_id": self.firmware_manufacturer_id,
            "firmware_version": self.firmware_version,
            "rim_locator_type": self.rim_locator_type,
            "rim_locator": self.rim_locator.hex(),
            "platform_cert_locator_type": self.platform_cert_locator_type,
            "platform_cert_locator": self.platform_cert_locator.hex(),
        }


def parse_sp800_155_event(data: bytes, *, where: str = "SP800-155 event") -> Sp800155Event:
    r = Reader(data, where)
    signature = r.take(16, "Signature")
    if signature not in SP800_155_SIGNATURES:
        raise r.fail("signature is not an SP800-155 event", 0)
    version = SP800_155_SIGNATURES.index(signature) + 1
    vendor_id = r.u32le("VendorId")
    guid = Guid(r.take(16, "ReferenceManifestGuid"))
    maker, model, pversion, fw_maker = (
        _ascii(r.take(r.u8(f"{n}Size"), n))
        for n in (
            "PlatformManufacturerStr",
            "PlatformModel",
            "PlatformVersion",
            "FirmwareManufacturerStr",
        )
    )
    fw_id = r.u32le("FirmwareManufacturerId")
    fw_version = _ascii(r.take(r.u8("FirmwareVersionSize"), "FirmwareVersion"))
    rim_type = cert_type = None
    rim = cert = b""
    if version == 3:
        rim_type = r.u32le("RIMLocatorType")
        rim = r.take(r.u32le("RIMLocatorLength"), "RIMLocator")
        cert_type = r.u32le("PlatformCertLocatorType")
        cert = r.take(r.u32le("PlatformCertLocatorLength"), "PlatformCertLocator")
    event = Sp800155Event(
        version,
        vendor_id,
        guid,
        maker,
        model,
        pversion,
        fw_maker,
        fw_id,
        fw_version,
        rim_type,
        rim,
        cert_type,
        cert,
    )
    r.expect_end(where)
    return event
