"""Decode the data of TCG event-log events into typed, immutable values (untrusted, unverified).

``decode_event_data(event_type, data)`` is a pure function of the bytes. A known event type whose
data is malformed raises MalformedEvidence (the event log turns that into an "undecodable" result
that policy treats as unknown); an unknown or vendor type is RawEventData, never an error. Nothing
here says whether the data is covered by the event's digest: that is the replay's job, and only
data it confirms may be trusted.

Every class has ``describe()`` (one line for a table) and ``to_json()`` (bytes as hex).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._reader import Reader
from .errors import MalformedEvidence
from .events import EventType as ET
from .events import event_type_name
from .uefi import (
    FirmwareBlob,
    GptEvent,
    Guid,
    HandoffTables,
    Sp800155Event,
    parse_firmware_blob,
    parse_firmware_blob2,
    parse_gpt_event,
    parse_handoff_tables,
    parse_image_load_event,
    parse_sp800_155_event,
    parse_startup_locality,
    parse_variable_data,
)
from .uefi.devicepath import parse_device_path
from .uefi.structures import SP800_155_SIGNATURES, STARTUP_LOCALITY_SIGNATURE
from .uefi.variables import VariableValue, decode_variable_value

LINUX_EFI_LOAD_OPTIONS_TAG = 0x8F3B22ED
LINUX_EFI_INITRD_TAG = 0x8F3B22EC
_TAG_KINDS = {
    LINUX_EFI_LOAD_OPTIONS_TAG: "linux_load_options",
    LINUX_EFI_INITRD_TAG: "linux_initrd",
}
_IPL_PREFIXES = (  # (prefix, kind): GRUB upstream uses "name: ", RHEL's GRUB "name "
    ("grub_cmd: ", "grub_cmd"),
    ("kernel_cmdline: ", "kernel_cmdline"),
    ("grub_kernel_cmdline ", "kernel_cmdline"),
    ("grub_cmd ", "grub_cmd"),
)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _one_line(text: str) -> str:
    """``text`` with line breaks and tabs escaped, for a one-line table cell."""
    return text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _text_or_none(data: bytes) -> str | None:
    """``data`` as text if it is printable UTF-8 (one trailing NUL allowed), else None."""
    body = data[:-1] if data.endswith(b"\x00") else data
    if not body or b"\x00" in body:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if all(c.isprintable() or c in "\t\n\r" for c in text) else None


def _utf16_or_none(data: bytes) -> str | None:
    """``data`` as UTF-16LE text (trailing NULs, and systemd-boot's odd trailing NUL byte, dropped)."""
    if len(data) % 2 and data.endswith(b"\x00"):
        data = data[:-1]
    if len(data) < 2 or len(data) % 2:
        return None
    try:
        text = data.decode("utf-16-le").rstrip("\x00")
    except UnicodeDecodeError:
        return None
    if "\x00" in text or not all(c.isprintable() or c in "\t\n\r" for c in text):
        return None
    return text


# --- Event data classes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawEventData:
    """Data of an unknown/vendor type, or of a known type with no fixed layout."""

    event_type: int
    data: bytes
    note: str = ""

    def describe(self) -> str:
        text = _text_or_none(self.data)
        head = f"{event_type_name(self.event_type)}: {len(self.data)} bytes"
        if text is not None:
            head += f' "{text[:60]}"'
        return f"{head} ({self.note})" if self.note else head

    def to_json(self) -> dict[str, Any]:
        return {"kind": "raw", "data": self.data.hex(), "note": self.note}


@dataclass(frozen=True, slots=True)
class TextEvent:
    """An ASCII/UTF-16 string: EV_ACTION, EV_EFI_ACTION, text EV_POST_CODE, "HCRTM", …"""

    text: str
    encoding: str = "ascii"

    def describe(self) -> str:
        return _one_line(self.text)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "text", "text": self.text, "encoding": self.encoding}


@dataclass(frozen=True, slots=True)
class CrtmVersion:
    """EV_S_CRTM_VERSION: a UTF-16 (or ASCII) version string, a GUID, or opaque bytes."""

    kind: str  # "string", "guid" or "binary"
    text: str | None
    guid: Guid | None
    data: bytes

    def describe(self) -> str:
        if self.kind == "string":
            return f'CRTM version "{self.text}"'
        if self.kind == "guid":
            return f"CRTM version GUID {self.guid}"
        return f"CRTM version ({len(self.data)} bytes)"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "crtm_version",
            "form": self.kind,
            "text": self.text,
            "guid": str(self.guid) if self.guid else None,
            "data": self.data.hex(),
        }


@dataclass(frozen=True, slots=True)
class BlobEvent:
    """A measured memory range: firmware blob (1 or 2), EV_POST_CODE or EV_S_CRTM_CONTENTS blob."""

    blob: FirmwareBlob

    @property
    def base(self) -> int:
        return self.blob.base

    @property
    def length(self) -> int:
        return self.blob.length

    def describe(self) -> str:
        desc = f"{self.blob.description} " if self.blob.description else ""
        return f"{desc}blob 0x{self.base:x} + 0x{self.length:x} ({_size(self.length)})"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "blob",
            "base": self.base,
            "length": self.length,
            "description": self.blob.description,
        }


@dataclass(frozen=True, slots=True)
class SeparatorEvent:
    """EV_SEPARATOR: u32 0 (normal), 0xFFFFFFFF (error), or Windows' "WBCL"."""

    data: bytes

    @property
    def value(self) -> int | None:
        return None if self.data == b"WBCL" else int.from_bytes(self.data, "little")

    @property
    def is_error(self) -> bool:
        return self.value == 0xFFFFFFFF

    def describe(self) -> str:
        if self.value is None:
            return 'separator "WBCL"'
        return f"separator 0x{self.value:08x}" + (" (error)" if self.is_error else "")

    def to_json(self) -> dict[str, Any]:
        return {"kind": "separator", "value": self.value, "data": self.data.hex()}


@dataclass(frozen=True, slots=True)
class VariableEvent:
    """EV_EFI_VARIABLE_DRIVER_CONFIG / _BOOT / _BOOT2 / _AUTHORITY: a variable and its value."""

    guid: Guid
    name: str
    data: bytes  # the raw VariableData
    value: VariableValue
    authority: bool = False
    trailing: bytes = b""  # tolerated bytes after UEFI_VARIABLE_DATA (see _decode_variable)

    def describe(self) -> str:
        sep = ": " if self.authority or hasattr(self.value, "lists") else " = "
        more = f" (+{len(self.trailing)} trailing bytes)" if self.trailing else ""
        return f"{self.name}{sep}{self.value.describe()}{more}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "variable",
            "guid": str(self.guid),
            "guid_name": self.guid.name,
            "name": self.name,
            "authority": self.authority,
            "data": self.data.hex(),
            "value": self.value.to_json(),
            "trailing": self.trailing.hex(),
        }


@dataclass(frozen=True, slots=True)
class ImageLoad:
    """UEFI_IMAGE_LOAD_EVENT of a boot application or driver."""

    location: int
    length: int
    link_time_address: int
    device_path: bytes
    device_path_text: str
    padding: bytes = b""  # shim's struct padding after the device path

    @property
    def file_path(self) -> str | None:
        """The last file-path node (``\\EFI\\debian\\shimx64.efi``), if the device path has one."""
        files = [n for n in parse_device_path(self.device_path) if (n.type, n.subtype) == (4, 4)]
        if not files:
            return None
        return files[-1].data.decode("utf-16-le", "replace").split("\x00", 1)[0]

    def describe(self) -> str:
        path = self.device_path_text or "(no device path)"
        file = self.file_path
        head = f"{file} " if file else ""
        return f"{head}({_size(self.length)}) {path}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "image_load",
            "location": self.location,
            "length": self.length,
            "link_time_address": self.link_time_address,
            "device_path": self.device_path.hex(),
            "device_path_text": self.device_path_text,
            "padding": self.padding.hex(),
        }


@dataclass(frozen=True, slots=True)
class GptData:
    gpt: GptEvent

    def describe(self) -> str:
        names = ", ".join(p.name or str(p.type_guid) for p in self.gpt.partitions[:4])
        return (
            f"GPT disk {self.gpt.header.disk_guid}: {len(self.gpt.partitions)} partitions ({names})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "gpt",
            "disk_guid": str(self.gpt.header.disk_guid),
            "partitions": [p.to_json() for p in self.gpt.partitions],
        }


@dataclass(frozen=True, slots=True)
class IplString:
    """EV_IPL text: GRUB commands and kernel command lines, file paths, systemd-boot/-stub UTF-16.

    ``text`` is the exact logged string (without the terminating NUL); ``kind`` is "grub_cmd",
    "kernel_cmdline", "path", "uki_section", "empty" or "string"; ``value`` is ``text`` without a
    GRUB prefix.
    """

    kind: str
    text: str
    encoding: str
    value: str

    def describe(self) -> str:
        line = _one_line(self.text)
        return line if self.kind in ("grub_cmd", "kernel_cmdline") else f"{self.kind}: {line}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "ipl",
            "ipl_kind": self.kind,
            "text": self.text,
            "encoding": self.encoding,
            "value": self.value,
        }


@dataclass(frozen=True, slots=True)
class TaggedEvent:
    """EV_EVENT_TAG (TCG_PCClientTaggedEvent): Linux EFI-stub load options / initrd, Windows SIPA."""

    tag_id: int
    data: bytes
    kind: str  # "linux_load_options", "linux_initrd" or "tagged"

    @property
    def text(self) -> str | None:
        return _text_or_none(self.data)

    def describe(self) -> str:
        text = self.text
        detail = f' "{text}"' if text is not None else f" ({len(self.data)} bytes)"
        return f"tag 0x{self.tag_id:08x} {self.kind}{detail}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "tagged",
            "tag_id": self.tag_id,
            "tag_kind": self.kind,
            "text": self.text,
            "data": self.data.hex(),
        }


@dataclass(frozen=True, slots=True)
class HandoffTablesEvent:
    tables: HandoffTables

    def describe(self) -> str:
        names = ", ".join(f"{g.name or g}@0x{a:x}" for g, a in self.tables.tables)
        desc = f"{self.tables.description}: " if self.tables.description else ""
        return f"{desc}{len(self.tables.tables)} tables ({names})"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "handoff_tables",
            "description": self.tables.description,
            "tables": [
                {"guid": str(g), "name": g.name, "address": a} for g, a in self.tables.tables
            ],
        }


@dataclass(frozen=True, slots=True)
class SpecIdEvent:
    """The Spec ID header event (EV_NO_ACTION), as displayed; the log parser owns its semantics."""

    signature: str
    platform_class: int
    spec_version: tuple[int, int, int]
    uintn_size: int
    algorithms: tuple[tuple[int, int], ...]
    vendor_info: bytes

    def describe(self) -> str:
        algs = ", ".join(f"0x{a:04x}/{s}" for a, s in self.algorithms)
        major, minor, errata = self.spec_version
        return f"{self.signature} v{major}.{minor} errata {errata} (algorithms {algs or 'none'})"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "spec_id",
            "signature": self.signature,
            "platform_class": self.platform_class,
            "spec_version": list(self.spec_version),
            "uintn_size": self.uintn_size,
            "algorithms": [{"id": a, "digest_size": s} for a, s in self.algorithms],
            "vendor_info": self.vendor_info.hex(),
        }


@dataclass(frozen=True, slots=True)
class StartupLocalityEvent:
    locality: int

    def describe(self) -> str:
        return f"StartupLocality {self.locality}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "startup_locality", "locality": self.locality}


@dataclass(frozen=True, slots=True)
class Sp800155Data:
    event: Sp800155Event

    def describe(self) -> str:
        e = self.event
        return (
            f"SP800-155 platform {e.platform_manufacturer} {e.platform_model} "
            f"{e.platform_version}, firmware {e.firmware_manufacturer} {e.firmware_version}"
        )

    def to_json(self) -> dict[str, Any]:
        return {"kind": "sp800_155", **self.event.to_json()}


@dataclass(frozen=True, slots=True)
class CompactHash:
    """EV_COMPACT_HASH (Windows: a u32 in PCR 11/12)."""

    data: bytes

    def describe(self) -> str:
        if len(self.data) == 4:
            return f"compact hash 0x{int.from_bytes(self.data, 'little'):08x}"
        return f"compact hash {self.data.hex()}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "compact_hash", "data": self.data.hex()}


EventData = (
    RawEventData
    | TextEvent
    | CrtmVersion
    | BlobEvent
    | SeparatorEvent
    | VariableEvent
    | ImageLoad
    | GptData
    | IplString
    | TaggedEvent
    | HandoffTablesEvent
    | SpecIdEvent
    | StartupLocalityEvent
    | Sp800155Data
    | CompactHash
)


# --- Decoders -------------------------------------------------------------------------------------


def decode_event_data(event_type: int, data: bytes) -> EventData:
    """Decode ``data`` of an event of ``event_type``; see the module docstring for the contract."""
    decoder = _DECODERS.get(event_type)
    if decoder is None:
        return RawEventData(event_type, data, "unknown event type")
    return decoder(event_type, data)


def _where(event_type: int) -> str:
    return f"{event_type_name(event_type)} data"


SHIM_AUTHORITY_PADDING = 7
"""Old shim logs EV_EFI_VARIABLE_AUTHORITY with sizeof() struct padding after the value (and its
digest one byte short, go-attestation#157): up to 7 trailing bytes are tolerated and kept."""


def _decode_variable(event_type: int, data: bytes) -> VariableEvent:
    """Steps: 1. UEFI_VARIABLE_DATA, strict except for two known firmware behaviours: shim's
    padding after AUTHORITY data, and TPM 1.2-era firmware logging BootOrder and every Boot####
    in one EV_EFI_VARIABLE_BOOT (the first is decoded, the rest kept in ``trailing``);
    2. the value, by variable (strict for Secure Boot flags and databases)."""
    where = _where(event_type)
    authority = event_type == ET.EV_EFI_VARIABLE_AUTHORITY
    # 1. The variable.
    trailing = SHIM_AUTHORITY_PADDING if authority else 0
    if event_type == ET.EV_EFI_VARIABLE_BOOT:
        trailing = len(data)
    var = parse_variable_data(data, max_trailing=trailing, where=where)
    # 2. Its value.
    value = decode_variable_value(var.guid, var.name, var.data, authority=authority, where=where)
    return VariableEvent(var.guid, var.name, var.data, value, authority, var.trailing)


def _decode_image(event_type: int, data: bytes) -> ImageLoad:
    img = parse_image_load_event(data, where=_where(event_type))
    return ImageLoad(
        img.location,
        img.length,
        img.link_time_address,
        img.device_path,
        img.device_path_text,
        img.padding,
    )


def _decode_separator(event_type: int, data: bytes) -> SeparatorEvent:
    if len(data) != 4:
        raise MalformedEvidence(
            f"separator data must be 4 bytes, got {len(data)}", where=_where(event_type)
        )
    return SeparatorEvent(data)


def _decode_action(event_type: int, data: bytes) -> TextEvent:
    try:
        text = data.rstrip(b"\x00").decode("ascii")
    except UnicodeDecodeError:
        raise MalformedEvidence("action string is not ASCII", where=_where(event_type)) from None
    return TextEvent(text)


def _decode_text_or_raw(event_type: int, data: bytes) -> TextEvent | RawEventData:
    text = _text_or_none(data)
    return TextEvent(text) if text is not None else RawEventData(event_type, data)


def _decode_blob_or_text(event_type: int, data: bytes) -> BlobEvent | TextEvent | RawEventData:
    """EV_POST_CODE / EV_S_CRTM_CONTENTS: a 16-byte blob (base, length), or a string."""
    text = _text_or_none(data)
    if text is not None:
        return TextEvent(text)
    if len(data) == 16:
        return BlobEvent(parse_firmware_blob(data, where=_where(event_type)))
    return RawEventData(event_type, data)


def _decode_crtm_version(event_type: int, data: bytes) -> CrtmVersion:
    if data == b"\x00\x00":
        return CrtmVersion("string", "", None, data)
    utf16 = _utf16_or_none(data) if data.endswith(b"\x00\x00") else None
    if utf16:
        return CrtmVersion("string", utf16, None, data)
    text = _text_or_none(data)
    if text is not None:
        return CrtmVersion("string", text, None, data)
    if len(data) == 16:
        return CrtmVersion("guid", None, Guid(data), data)
    return CrtmVersion("binary", None, None, data)


def _decode_ipl(event_type: int, data: bytes) -> IplString | RawEventData:
    if not data:
        return IplString("empty", "", "ascii", "")
    text = _text_or_none(data)
    if text is not None:
        for prefix, kind in _IPL_PREFIXES:
            if text.startswith(prefix):
                return IplString(kind, text, "ascii", text[len(prefix) :])
        kind = "path" if text.startswith(("(", "/", "\\")) else "string"
        return IplString(kind, text, "ascii", text)
    wide = _utf16_or_none(data)
    if wide is not None:
        # systemd-stub measures UKI section names (".linux"); systemd-boot the command line.
        kind = "uki_section" if wide.startswith(".") and " " not in wide else "kernel_cmdline"
        return IplString(kind, wide, "utf-16le", wide)
    return RawEventData(event_type, data, "binary IPL data")


def _decode_tag(event_type: int, data: bytes) -> TaggedEvent:
    r = Reader(data, _where(event_type))
    tag_id = r.u32le("taggedEventID")
    size = r.u32le("taggedEventDataSize")
    if size != r.remaining:
        raise r.fail(f"taggedEventDataSize {size} does not match the {r.remaining} bytes left", 4)
    return TaggedEvent(tag_id, r.take(size, "taggedEventData"), _TAG_KINDS.get(tag_id, "tagged"))


def _decode_gpt(event_type: int, data: bytes) -> GptData:
    return GptData(parse_gpt_event(data, where=_where(event_type)))


def _decode_blob(event_type: int, data: bytes) -> BlobEvent:
    return BlobEvent(parse_firmware_blob(data, where=_where(event_type)))


def _decode_blob2(event_type: int, data: bytes) -> BlobEvent:
    return BlobEvent(parse_firmware_blob2(data, where=_where(event_type)))


def _decode_handoff(event_type: int, data: bytes) -> HandoffTablesEvent:
    two = event_type == ET.EV_EFI_HANDOFF_TABLES2
    return HandoffTablesEvent(
        parse_handoff_tables(data, with_description=two, where=_where(event_type))
    )


def _decode_table_of_devices(event_type: int, data: bytes) -> HandoffTablesEvent | RawEventData:
    """No fixed layout in the spec; UEFI firmware logs handoff-table pointers here."""
    try:
        return HandoffTablesEvent(parse_handoff_tables(data, where=_where(event_type)))
    except MalformedEvidence:
        return RawEventData(event_type, data)


def _decode_no_action(event_type: int, data: bytes) -> EventData:
    head = data[:16]
    if head.startswith(b"Spec ID Event"):
        return _decode_spec_id(data)
    if head == STARTUP_LOCALITY_SIGNATURE:
        return StartupLocalityEvent(parse_startup_locality(data))
    if head in SP800_155_SIGNATURES:
        return Sp800155Data(parse_sp800_155_event(data))
    return RawEventData(event_type, data, "unrecognised EV_NO_ACTION")


def _decode_spec_id(data: bytes) -> SpecIdEvent:
    r = Reader(data, "Spec ID event")
    signature = r.take(16, "signature").rstrip(b"\x00").decode("ascii", "replace")
    platform_class = r.u32le("platformClass")
    minor, major, errata, uintn = (r.u8(n) for n in ("minor", "major", "errata", "uintnSize"))
    algorithms: tuple[tuple[int, int], ...] = ()
    if signature == "Spec ID Event03":
        count = r.u32le("numberOfAlgorithms")
        if count * 4 > r.remaining:
            raise r.fail(f"numberOfAlgorithms {count} overruns the event", 24)
        algorithms = tuple((r.u16le("algorithmId"), r.u16le("digestSize")) for _ in range(count))
    vendor = r.take(r.u8("vendorInfoSize"), "vendorInfo")
    r.expect_end("Spec ID event")
    return SpecIdEvent(signature, platform_class, (major, minor, errata), uintn, algorithms, vendor)


def _decode_compact_hash(event_type: int, data: bytes) -> CompactHash:
    return CompactHash(data)


def _decode_raw(event_type: int, data: bytes) -> RawEventData:
    return RawEventData(event_type, data)


_DECODERS: dict[int, Callable[[int, bytes], EventData]] = {
    ET.EV_PREBOOT_CERT: _decode_raw,
    ET.EV_POST_CODE: _decode_blob_or_text,
    ET.EV_UNUSED: _decode_raw,
    ET.EV_NO_ACTION: _decode_no_action,
    ET.EV_SEPARATOR: _decode_separator,
    ET.EV_ACTION: _decode_action,
    ET.EV_EVENT_TAG: _decode_tag,
    ET.EV_S_CRTM_CONTENTS: _decode_blob_or_text,
    ET.EV_S_CRTM_VERSION: _decode_crtm_version,
    ET.EV_CPU_MICROCODE: _decode_text_or_raw,
    ET.EV_PLATFORM_CONFIG_FLAGS: _decode_text_or_raw,
    ET.EV_TABLE_OF_DEVICES: _decode_table_of_devices,
    ET.EV_COMPACT_HASH: _decode_compact_hash,
    ET.EV_IPL: _decode_ipl,
    ET.EV_IPL_PARTITION_DATA: _decode_raw,
    ET.EV_NONHOST_CODE: _decode_text_or_raw,
    ET.EV_NONHOST_CONFIG: _decode_text_or_raw,
    ET.EV_NONHOST_INFO: _decode_text_or_raw,
    ET.EV_OMIT_BOOT_DEVICE_EVENTS: _decode_text_or_raw,
    ET.EV_EFI_VARIABLE_DRIVER_CONFIG: _decode_variable,
    ET.EV_EFI_VARIABLE_BOOT: _decode_variable,
    ET.EV_EFI_VARIABLE_BOOT2: _decode_variable,
    ET.EV_EFI_VARIABLE_AUTHORITY: _decode_variable,
    ET.EV_EFI_BOOT_SERVICES_APPLICATION: _decode_image,
    ET.EV_EFI_BOOT_SERVICES_DRIVER: _decode_image,
    ET.EV_EFI_RUNTIME_SERVICES_DRIVER: _decode_image,
    ET.EV_EFI_GPT_EVENT: _decode_gpt,
    ET.EV_EFI_GPT_EVENT2: _decode_gpt,
    ET.EV_EFI_ACTION: _decode_action,
    ET.EV_EFI_PLATFORM_FIRMWARE_BLOB: _decode_blob,
    ET.EV_EFI_PLATFORM_FIRMWARE_BLOB2: _decode_blob2,
    ET.EV_EFI_HANDOFF_TABLES: _decode_handoff,
    ET.EV_EFI_HANDOFF_TABLES2: _decode_handoff,
    ET.EV_EFI_HCRTM_EVENT: _decode_text_or_raw,
}
