"""EFI device paths to the UEFI specification's text form (chapter 10.6, as EDK2 prints them).

Untrusted input: the node count is bounded, every node length is at least its 4-byte header and
within the buffer, and a node too short for its fields is a MalformedEvidence naming the node.
Unknown node types print as ``Path(type,subtype,hex)`` rather than failing.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import MalformedEvidence
from .guid import Guid

MAX_NODES = 512
_END = 0x7F
_END_INSTANCE = 0x01
_END_ENTIRE = 0xFF


@dataclass(frozen=True, slots=True)
class DevicePathNode:
    type: int
    subtype: int
    data: bytes  # the node's data after its 4-byte header
    offset: int


def parse_device_path(data: bytes, *, where: str = "device path") -> tuple[DevicePathNode, ...]:
    """Split a device path (or several, each ended by End Entire) into nodes, end nodes included.

    A buffer that stops without an end node, or whose rest is all zero bytes (firmware pads the
    path with zeros instead of an end node), ends the path; a node whose length is below 4 or past
    the end of the buffer is malformed.
    """
    nodes: list[DevicePathNode] = []
    pos = 0
    end = len(data)
    while pos < end:
        if len(nodes) >= MAX_NODES:
            raise MalformedEvidence(f"more than {MAX_NODES} nodes", where=where, offset=pos)
        if end - pos < 4:
            raise MalformedEvidence(
                f"truncated node header ({end - pos} bytes left)", where=where, offset=pos
            )
        length = data[pos + 2] | (data[pos + 3] << 8)
        if length == 0 and not any(data[pos:]):
            break
        if length < 4:
            raise MalformedEvidence(
                f"node length {length} is below the 4-byte header", where=where, offset=pos
            )
        if pos + length > end:
            raise MalformedEvidence(
                f"node length {length} overruns the device path ({end - pos} bytes left)",
                where=where,
                offset=pos,
            )
        nodes.append(DevicePathNode(data[pos], data[pos + 1], data[pos + 4 : pos + length], pos))
        pos += length
    return tuple(nodes)


def device_path_to_text(data: bytes, *, where: str = "device path") -> str:
    """The text form, e.g. ``PciRoot(0x0)/Pci(0x1,0x1)/HD(1,GPT,…,0x800,0x100000)/\\EFI\\x.efi``.

    Instances (End Instance) are separated by ``,``; several whole paths likewise.
    """
    parts: list[str] = []
    current: list[str] = []
    for node in parse_device_path(data, where=where):
        if node.type == _END:
            if current:
                parts.append("/".join(current))
            current = []
            continue
        current.append(node_to_text(node, where))
    if current:
        parts.append("/".join(current))
    return ",".join(parts)


def node_to_text(node: DevicePathNode, where: str = "device path") -> str:
    fmt = _FORMATTERS.get((node.type, node.subtype))
    if fmt is None:
        return f"Path({node.type},{node.subtype},{node.data.hex()})"
    try:
        return fmt(node.data)
    except (struct.error, IndexError, ValueError):
        raise MalformedEvidence(
            f"node type {node.type} subtype {node.subtype} too short ({len(node.data)} data bytes)",
            where=where,
            offset=node.offset,
        ) from None


def _u(data: bytes, fmt: str, offset: int = 0) -> tuple[int, ...]:
    return struct.unpack_from("<" + fmt, data, offset)


def _guid_at(data: bytes, offset: int = 0) -> str:
    if len(data) < offset + 16:
        raise ValueError("short GUID")
    return str(Guid(data[offset : offset + 16]))


def _utf16z(data: bytes) -> str:
    if len(data) % 2:
        raise ValueError("odd UTF-16 length")
    text = data.decode("utf-16-le", "replace")
    cut = text.find("\x00")
    return text if cut < 0 else text[:cut]


def _vendor(prefix: str) -> Callable[[bytes], str]:
    def fmt(data: bytes) -> str:
        guid = _guid_at(data)
        extra = data[16:]
        return f"{prefix}({guid},{extra.hex()})" if extra else f"{prefix}({guid})"

    return fmt


def _pci(d: bytes) -> str:
    function, device = _u(d, "BB")
    return f"Pci(0x{device:x},0x{function:x})"


def _memory_mapped(d: bytes) -> str:
    mem_type, start, stop = _u(d, "IQQ")
    return f"MemoryMapped(0x{mem_type:x},0x{start:x},0x{stop:x})"


_PNP_NAMES = {
    0x0A03: "PciRoot",
    0x0A08: "PcieRoot",
    0x0604: "Floppy",
    0x0301: "Keyboard",
    0x0501: "Serial",
    0x0401: "ParallelPort",
}


def _acpi(d: bytes) -> str:
    hid, uid = _u(d, "II")
    if hid & 0xFFFF == 0x41D0:
        name = _PNP_NAMES.get(hid >> 16)
        if name is not None:
            return f"{name}(0x{uid:x})"
        return f"Acpi(PNP{hid >> 16:04X},0x{uid:x})"
    return f"Acpi(0x{hid:08x},0x{uid:x})"


def _acpi_ex(d: bytes) -> str:
    hid, uid, cid = _u(d, "III")
    strings = d[12:].split(b"\x00")
    texts = [s.decode("ascii", "replace") for s in [*strings, b"", b"", b""][:3]]
    return f"AcpiEx(0x{hid:x},0x{cid:x},0x{uid:x},{texts[0]},{texts[2]},{texts[1]})"


def _acpi_adr(d: bytes) -> str:
    if not d or len(d) % 4:
        raise ValueError("bad ADR length")
    adrs = struct.unpack(f"<{len(d) // 4}I", d)
    return "AcpiAdr(" + ",".join(f"0x{a:x}" for a in adrs) + ")"


def _atapi(d: bytes) -> str:
    primary, slave, lun = _u(d, "BBH")
    return (
        f"Ata({'Secondary' if primary else 'Primary'},{'Slave' if slave else 'Master'},0x{lun:x})"
    )


def _mac(d: bytes) -> str:
    if_type = d[32]
    size = 6 if if_type in (0, 1) else 32
    return f"MAC({d[:size].hex()},0x{if_type:x})"


def _ip_proto(proto: int) -> str:
    return {6: "TCP", 17: "UDP"}.get(proto, f"0x{proto:x}")


def _ipv4(d: bytes) -> str:
    local, remote = ipaddress.IPv4Address(d[0:4]), ipaddress.IPv4Address(d[4:8])
    _lport, _rport, proto, static = _u(d, "HHHB", 8)
    text = f"IPv4({remote},{_ip_proto(proto)},{'Static' if static else 'DHCP'},{local}"
    if len(d) >= 23:
        text += f",{ipaddress.IPv4Address(d[15:19])},{ipaddress.IPv4Address(d[19:23])}"
    return text + ")"


def _ipv6(d: bytes) -> str:
    local, remote = ipaddress.IPv6Address(d[0:16]), ipaddress.IPv6Address(d[16:32])
    _lport, _rport, proto, origin = _u(d, "HHHB", 32)
    origin_text = {0: "Static", 1: "StatelessAutoConfigure"}.get(origin, "StatefulAutoConfigure")
    text = f"IPv6({remote},{_ip_proto(proto)},{origin_text},{local}"
    if len(d) >= 56:
        text += f",{ipaddress.IPv6Address(d[40:56])},{d[39]}"
    return text + ")"


def _uart(d: bytes) -> str:
    _reserved, baud, bits, parity, stop = _u(d, "IQBBB")
    parity_text = {0: "D", 1: "N", 2: "E", 3: "O", 4: "M", 5: "S"}.get(parity, f"{parity}")
    stop_text = {0: "D", 1: "1", 2: "1.5", 3: "2"}.get(stop, f"{stop}")
    return f"Uart({baud},{bits},{parity_text},{stop_text})"


def _ven_msg(d: bytes) -> str:
    guid = Guid(d[:16]) if len(d) >= 16 else None
    short = {
        "PC_ANSI": "VenPcAnsi()",
        "VT_100": "VenVt100()",
        "VT_100_PLUS": "VenVt100Plus()",
        "VT_UTF8": "VenUtf8()",
    }
    if guid is not None and guid.name in short and len(d) == 16:
        return short[guid.name]
    return _vendor("VenMsg")(d)


def _nvme(d: bytes) -> str:
    (nsid,) = _u(d, "I")
    eui = d[4:12]
    if len(eui) != 8:
        raise ValueError("short EUI-64")
    return f"NVMe(0x{nsid:x}," + "-".join(f"{b:02X}" for b in reversed(eui)) + ")"


def _hd(d: bytes) -> str:
    number, start, size = _u(d, "IQQ")
    sig, mbr_type, sig_type = d[20:36], d[36], d[37]
    del mbr_type
    if sig_type == 1:
        return f"HD({number},MBR,0x{int.from_bytes(sig[:4], 'little'):08x},0x{start:x},0x{size:x})"
    if sig_type == 2:
        return f"HD({number},GPT,{Guid(sig)},0x{start:x},0x{size:x})"
    return f"HD({number},{sig_type},0,0x{start:x},0x{size:x})"


def _cdrom(d: bytes) -> str:
    entry, start, size = _u(d, "IQQ")
    return f"CDROM(0x{entry:x},0x{start:x},0x{size:x})"


def _offset(d: bytes) -> str:
    _reserved, start, stop = _u(d, "IQQ")
    return f"Offset(0x{start:x},0x{stop:x})"


_BBS_TYPES = {1: "Floppy", 2: "HD", 3: "CDROM", 4: "PCMCIA", 5: "USB", 6: "Network"}


def _bbs(d: bytes) -> str:
    dev_type, status = _u(d, "HH")
    desc = d[4:].split(b"\x00", 1)[0].decode("ascii", "replace")
    return f"BBS({_BBS_TYPES.get(dev_type, f'0x{dev_type:x}')},{desc},0x{status:x})"


def _fmt1(name: str, code: str, width: str = "x") -> Callable[[bytes], str]:
    def fmt(d: bytes) -> str:
        values = _u(d, code)
        return f"{name}(" + ",".join(f"0x{v:{width}}" for v in values) + ")"

    return fmt


_FORMATTERS: dict[tuple[int, int], Callable[[bytes], str]] = {
    (1, 1): _pci,
    (1, 2): _fmt1("PcCard", "B"),
    (1, 3): _memory_mapped,
    (1, 4): _vendor("VenHw"),
    (1, 5): _fmt1("Ctrl", "I"),
    (2, 1): _acpi,
    (2, 2): _acpi_ex,
    (2, 3): _acpi_adr,
    (3, 1): _atapi,
    (3, 2): _fmt1("Scsi", "HH"),
    (3, 3): lambda d: "Fibre(0x{1:x},0x{2:x})".format(*_u(d, "IQQ")),
    (3, 5): _fmt1("USB", "BB"),
    (3, 10): _ven_msg,
    (3, 11): _mac,
    (3, 12): _ipv4,
    (3, 13): _ipv6,
    (3, 14): _uart,
    (3, 15): _fmt1("UsbClass", "HHBBB"),
    (3, 17): _fmt1("Unit", "B"),
    (3, 18): _fmt1("Sata", "HHH"),
    (3, 20): lambda d: "Vlan({})".format(*_u(d, "H")),
    (3, 23): _nvme,
    (3, 24): lambda d: f"Uri({d.decode('ascii', 'replace')})",
    (3, 25): _fmt1("UFS", "BB"),
    (3, 26): _fmt1("SD", "B"),
    (3, 29): _fmt1("eMMC", "B"),
    (4, 1): _hd,
    (4, 2): _cdrom,
    (4, 3): _vendor("VenMedia"),
    (4, 4): _utf16z,
    (4, 5): lambda d: f"Media({_guid_at(d)})",
    (4, 6): lambda d: f"FvFile({_guid_at(d)})",
    (4, 7): lambda d: f"Fv({_guid_at(d)})",
    (4, 8): _offset,
    (5, 1): _bbs,
}
