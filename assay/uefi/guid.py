"""EFI_GUID: 16 wire bytes (first three fields little-endian), canonical text, known names."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import MalformedEvidence

_FIELDS = struct.Struct("<IHH")


@dataclass(frozen=True, slots=True)
class Guid:
    """An EFI_GUID as stored (``raw`` is the 16 wire bytes); ``str()`` gives the canonical form."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 16:
            raise MalformedEvidence(f"GUID must be 16 bytes, got {len(self.raw)}")

    @classmethod
    def from_bytes(cls, data: bytes, offset: int = 0, *, where: str = "GUID") -> Guid:
        if offset < 0 or offset + 16 > len(data):
            raise MalformedEvidence(
                f"GUID needs 16 bytes, {max(len(data) - offset, 0)} left",
                where=where,
                offset=offset,
            )
        return cls(bytes(data[offset : offset + 16]))

    @classmethod
    def parse(cls, text: str) -> Guid:
        """From the canonical ``8be4df61-93ca-11d2-aa0d-00e098032b8c`` form (ValueError if not)."""
        parts = text.strip().strip("{}").split("-")
        if [len(p) for p in parts] != [8, 4, 4, 4, 12]:
            raise ValueError(f"not a GUID: {text!r}")
        head = _FIELDS.pack(int(parts[0], 16), int(parts[1], 16), int(parts[2], 16))
        return cls(head + bytes.fromhex(parts[3] + parts[4]))

    def __str__(self) -> str:
        a, b, c = _FIELDS.unpack_from(self.raw)
        tail = self.raw[8:].hex()
        return f"{a:08x}-{b:04x}-{c:04x}-{tail[:4]}-{tail[4:]}"

    @property
    def name(self) -> str | None:
        """The well-known name of this GUID, if Assay knows it."""
        return WELL_KNOWN.get(str(self))

    def describe(self) -> str:
        name = self.name
        return f"{name} ({self})" if name else str(self)


WELL_KNOWN: dict[str, str] = {
    # Variable namespaces.
    "8be4df61-93ca-11d2-aa0d-00e098032b8c": "EFI_GLOBAL_VARIABLE",
    "d719b2cb-3d3a-4596-a3bc-dad00e67656f": "EFI_IMAGE_SECURITY_DATABASE",
    "605dab50-e046-4300-abb6-3dd810dd8b23": "SHIM_LOCK",
    "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f": "SYSTEMD_BOOT_LOADER",
    # Signature types (EFI_SIGNATURE_LIST.SignatureType).
    "c1c41626-504c-4092-aca9-41f936934328": "EFI_CERT_SHA256",
    "826ca512-cf10-4ac9-b187-be01496631bd": "EFI_CERT_SHA1",
    "0b6e5233-a65c-44c9-9407-d9ab83bfc8bd": "EFI_CERT_SHA224",
    "ff3e5307-9fd0-48c9-85f1-8ad56c701e01": "EFI_CERT_SHA384",
    "093e0fae-a6c4-4f50-9f1b-d41e2b89c19a": "EFI_CERT_SHA512",
    "3c5766e8-269c-4e34-aa14-ed776e85b3b6": "EFI_CERT_RSA2048",
    "e2b36190-879b-4a3d-ad8d-f2e7bba32784": "EFI_CERT_RSA2048_SHA256",
    "67f8444f-8743-48f1-a328-1eaab8736080": "EFI_CERT_RSA2048_SHA1",
    "a5c059a1-94e4-4aa7-87b5-ab155c2bf072": "EFI_CERT_X509",
    "3bd2a492-96c0-4079-b420-fcf98ef103ed": "EFI_CERT_X509_SHA256",
    "7076876e-80c2-4ee6-aad2-28b349a6865b": "EFI_CERT_X509_SHA384",
    "446dbf63-2502-4cda-bcfa-2465d2b0fe9d": "EFI_CERT_X509_SHA512",
    "4aafd29d-68df-49ee-8aa9-347d375665a7": "EFI_CERT_TYPE_PKCS7",
    # Signature owners.
    "77fa9abd-0359-4d32-bd60-28f4e78f784b": "MICROSOFT",
    # Configuration tables (handoff tables).
    "eb9d2d30-2d88-11d3-9a16-0090273fc14d": "ACPI_TABLE",
    "8868e871-e4f1-11d3-bc22-0080c73c8881": "EFI_ACPI_20_TABLE",
    "eb9d2d31-2d88-11d3-9a16-0090273fc14d": "SMBIOS_TABLE",
    "f2fd1544-9794-4a2c-992e-e5bbcf20e394": "SMBIOS3_TABLE",
    "eb9d2d2f-2d88-11d3-9a16-0090273fc14d": "MPS_TABLE",
    "7739f24c-93d7-11d4-9a3a-0090273fc14d": "HOB_LIST",
    # Device path vendor nodes.
    "e0c14753-f9be-11d2-9a0c-0090273fc14d": "PC_ANSI",
    "dfa66065-b419-11d3-9a2d-0090273fc14d": "VT_100",
    "7baec70b-57e0-4c76-8e87-2f9e28088343": "VT_100_PLUS",
    "ad15a0d6-8bec-4acf-a073-d01de77e2d88": "VT_UTF8",
}


def well_known(name: str) -> Guid:
    """The GUID registered under ``name`` in WELL_KNOWN (KeyError if there is none)."""
    for text, known in WELL_KNOWN.items():
        if known == name:
            return Guid.parse(text)
    raise KeyError(name)


EFI_GLOBAL_VARIABLE = well_known("EFI_GLOBAL_VARIABLE")
EFI_IMAGE_SECURITY_DATABASE = well_known("EFI_IMAGE_SECURITY_DATABASE")
SHIM_LOCK = well_known("SHIM_LOCK")
EFI_CERT_X509 = well_known("EFI_CERT_X509")
EFI_CERT_SHA256 = well_known("EFI_CERT_SHA256")
