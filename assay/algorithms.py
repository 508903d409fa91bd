"""TPM hash algorithms (TPM_ALG_ID) and their names, sizes and implementations."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from typing import Any

from .errors import MalformedEvidence


class HashAlg(enum.IntEnum):
    """A TPM_ALG_ID of a hash algorithm that can be a PCR bank."""

    SHA1 = 0x0004
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    SM3_256 = 0x0012

    @property
    def bank(self) -> str:
        """The name used for this bank in JSON, YAML and on the command line (``"sha256"``)."""
        return _BANK_NAMES[self]

    @property
    def digest_size(self) -> int:
        return _SIZES[self]

    def new(self) -> Any:
        """A fresh hashlib object for this algorithm (for incremental hashing)."""
        return _ONE_SHOT[self](b"")

    @property
    def hasher(self) -> Callable[[bytes], Any]:
        """The one-shot constructor, ``hashlib.sha256`` and the like, for hot loops."""
        return _ONE_SHOT[self]

    def hash(self, data: bytes) -> bytes:
        return _ONE_SHOT[self](data).digest()  # type: ignore[no-any-return]

    @classmethod
    def from_id(
        cls, alg_id: int, *, where: str | None = None, offset: int | None = None
    ) -> HashAlg:
        try:
            return cls(alg_id)
        except ValueError:
            raise MalformedEvidence(
                f"unsupported hash algorithm 0x{alg_id:04x}", where=where, offset=offset
            ) from None

    @classmethod
    def from_bank(cls, name: str) -> HashAlg:
        """Parse a bank name (``sha256``, ``SHA-256``, ``sm3`` …); ValueError names the input."""
        key = name.strip().lower().replace("-", "").replace("_", "")
        if key == "sm3":
            key = "sm3256"
        for alg, bank in _BANK_NAMES.items():
            if bank.replace("_", "") == key:
                return alg
        raise ValueError(f"unknown hash algorithm {name!r}")


_BANK_NAMES = {
    HashAlg.SHA1: "sha1",
    HashAlg.SHA256: "sha256",
    HashAlg.SHA384: "sha384",
    HashAlg.SHA512: "sha512",
    HashAlg.SM3_256: "sm3_256",
}
_SIZES = {
    HashAlg.SHA1: 20,
    HashAlg.SHA256: 32,
    HashAlg.SHA384: 48,
    HashAlg.SHA512: 64,
    HashAlg.SM3_256: 32,
}


def _sm3_of(data: bytes) -> Any:
    return hashlib.new("sm3", data)


_ONE_SHOT: dict[HashAlg, Callable[[bytes], Any]] = {
    HashAlg.SHA1: hashlib.sha1,
    HashAlg.SHA256: hashlib.sha256,
    HashAlg.SHA384: hashlib.sha384,
    HashAlg.SHA512: hashlib.sha512,
    HashAlg.SM3_256: _sm3_of,
}
