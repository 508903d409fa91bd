"""Typed values of the UEFI variables that measured boot logs: Secure Boot state and databases,
boot options, shim's MOK and SBAT variables. Which decoder applies is chosen by GUID and name.

Strictness follows what policy relies on: Secure Boot flags and signature databases raise
MalformedEvidence when malformed (a poisoned database is attack 14); boot-manager variables that
firmware fills in its own ways fall back to RawValue with the reason kept in ``error``.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any

from ..errors import MalformedEvidence
from .guid import EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE, SHIM_LOCK, Guid
from .signatures import SignatureEntry, SignatureList, parse_signature_data, parse_signature_lists
from .structures import LoadOption, parse_load_option

_BOOT_OPTION = re.compile(r"(Boot|Driver|SysPrep|PlatformRecovery)[0-9A-Fa-f]{4}")
_GLOBAL_FLAGS = {"SecureBoot", "SetupMode", "AuditMode", "DeployedMode"}
_SHIM_FLAGS = {
    "MokListTrusted",
    "MokListTrustedRT",
    "MokSBState",
    "MokSBStateRT",
    "MokIgnoreDB",
    "SbatPolicy",
}
_GLOBAL_DATABASES = {"PK", "KEK", "PKDefault", "KEKDefault", "dbDefault", "dbxDefault"}
_SECURITY_DATABASES = {"db", "dbx", "dbt", "dbr"}
_MOK_DATABASES = {"MokList", "MokListX", "MokListRT", "MokListXRT"}
_U16_LISTS = {"BootOrder", "BootNext", "BootCurrent", "DriverOrder", "SysPrepOrder"}
_TEXT = {"SbatLevel", "SbatLevelRT"}


@dataclass(frozen=True, slots=True)
class FlagValue:
    """A one-byte flag such as SecureBoot; ``value`` is None when the variable is empty."""

    value: int | None

    def describe(self) -> str:
        return "(empty)" if self.value is None else str(self.value)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "flag", "value": self.value}


@dataclass(frozen=True, slots=True)
class SignatureDatabase:
    """PK/KEK/db/dbx/MokList content: the signature lists, strictly parsed."""

    lists: tuple[SignatureList, ...]

    @property
    def entries(self) -> tuple[SignatureEntry, ...]:
        return tuple(e for lst in self.lists for e in lst.entries)

    @property
    def certificates(self) -> tuple[SignatureEntry, ...]:
        return tuple(e for e in self.entries if e.certificate is not None)

    @property
    def hashes(self) -> tuple[SignatureEntry, ...]:
        return tuple(e for e in self.entries if e.certificate is None)

    def describe(self) -> str:
        certs, hashes = self.certificates, self.hashes
        if not certs and not hashes:
            return "empty"
        parts = []
        if certs:
            names = ", ".join(e.describe() for e in certs[:3]) + (", …" if len(certs) > 3 else "")
            parts.append(f"{_plural(len(certs), 'certificate')} ({names})")
        if hashes:
            parts.append(_plural(len(hashes), "hash", "hashes"))
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "signature_database", "lists": [lst.to_json() for lst in self.lists]}


@dataclass(frozen=True, slots=True)
class U16ListValue:
    """BootOrder, BootNext, BootCurrent: little-endian u16 option numbers."""

    values: tuple[int, ...]

    def describe(self) -> str:
        return ",".join(f"{v:04X}" for v in self.values) or "(empty)"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "u16_list", "values": list(self.values)}


@dataclass(frozen=True, slots=True)
class TextValue:
    """SbatLevel: the SBAT CSV text, kept exactly."""

    text: str

    def describe(self) -> str:
        return self.text.strip().replace("\n", " ")

    def to_json(self) -> dict[str, Any]:
        return {"kind": "text", "text": self.text}


@dataclass(frozen=True, slots=True)
class LoadOptionValue:
    option: LoadOption

    def describe(self) -> str:
        return f'"{self.option.description}" {self.option.device_path_text}'.rstrip()

    def to_json(self) -> dict[str, Any]:
        return {"kind": "load_option", **self.option.to_json()}


@dataclass(frozen=True, slots=True)
class AuthorityValue:
    """EV_EFI_VARIABLE_AUTHORITY: the database entry that authorised an image."""

    entry: SignatureEntry

    def describe(self) -> str:
        return self.entry.describe()

    def to_json(self) -> dict[str, Any]:
        return {"kind": "authority", **self.entry.to_json()}


@dataclass(frozen=True, slots=True)
class RawValue:
    """A value Assay does not decode, or could not (``error`` says why)."""

    data: bytes
    error: str | None = None

    def describe(self) -> str:
        text = f"{len(self.data)} bytes"
        return f"{text} (undecoded: {self.error})" if self.error else text

    def to_json(self) -> dict[str, Any]:
        return {"kind": "raw", "data": self.data.hex(), "error": self.error}


VariableValue = (
    FlagValue
    | SignatureDatabase
    | U16ListValue
    | TextValue
    | LoadOptionValue
    | AuthorityValue
    | RawValue
)


def decode_variable_value(
    guid: Guid, name: str, data: bytes, *, authority: bool = False, where: str = "variable"
) -> VariableValue:
    """Decode the value of variable ``guid:name``. ``authority`` is True for
    EV_EFI_VARIABLE_AUTHORITY, whose data is a signature entry rather than the variable."""
    here = f"{where} {name}"
    if (guid == EFI_GLOBAL_VARIABLE and name in _GLOBAL_FLAGS) or (
        guid == SHIM_LOCK and name in _SHIM_FLAGS
    ):
        return _flag(data, here)
    if guid == SHIM_LOCK and name in _TEXT:
        return TextValue(_text(data, here))
    if authority:
        return AuthorityValue(parse_signature_data(data, where=here))
    if _is_database(guid, name):
        return SignatureDatabase(parse_signature_lists(data, where=here))
    if guid == EFI_GLOBAL_VARIABLE and name in _U16_LISTS:
        if len(data) % 2:
            return RawValue(data, f"odd length {len(data)} for a u16 list")
        return U16ListValue(struct.unpack(f"<{len(data) // 2}H", data))
    if guid == EFI_GLOBAL_VARIABLE and _BOOT_OPTION.fullmatch(name):
        try:
            return LoadOptionValue(parse_load_option(data, where=here))
        except MalformedEvidence as exc:
            return RawValue(data, exc.args[0])
    return RawValue(data)


def _is_database(guid: Guid, name: str) -> bool:
    return (
        (guid == EFI_GLOBAL_VARIABLE and name in _GLOBAL_DATABASES)
        or (guid == EFI_IMAGE_SECURITY_DATABASE and name in _SECURITY_DATABASES)
        or (guid == SHIM_LOCK and name in _MOK_DATABASES)
    )


def _flag(data: bytes, where: str) -> FlagValue:
    if len(data) > 1:
        raise MalformedEvidence(f"a flag variable must be 1 byte, got {len(data)}", where=where)
    return FlagValue(data[0] if data else None)


def _text(data: bytes, where: str) -> str:
    try:
        return data.rstrip(b"\x00").decode("ascii")
    except UnicodeDecodeError:
        raise MalformedEvidence("text variable is not ASCII", where=where) from None


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"
