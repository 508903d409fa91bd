"""A bounds-checked cursor over untrusted bytes.

Every length read from the input is checked against what remains before anything is sliced or
allocated, and every failure is a MalformedEvidence naming the structure and the offset.
"""

from __future__ import annotations

import struct

from .errors import MalformedEvidence

_U16LE = struct.Struct("<H")
_U32LE = struct.Struct("<I")
_U64LE = struct.Struct("<Q")
_U16BE = struct.Struct(">H")
_U32BE = struct.Struct(">I")
_U64BE = struct.Struct(">Q")


class Reader:
    """Read little- or big-endian fields from a bytes object, never past its end."""

    __slots__ = ("_data", "_end", "pos", "where")

    def __init__(self, data: bytes, where: str, *, start: int = 0, end: int | None = None):
        self._data = data
        self.pos = start
        self._end = len(data) if end is None else end
        self.where = where

    @property
    def remaining(self) -> int:
        return self._end - self.pos

    def at_end(self) -> bool:
        return self.pos >= self._end

    def fail(self, message: str, offset: int | None = None) -> MalformedEvidence:
        return MalformedEvidence(
            message, where=self.where, offset=self.pos if offset is None else offset
        )

    def _need(self, n: int, what: str) -> int:
        pos = self.pos
        if n < 0 or pos + n > self._end:
            raise self.fail(f"{what}: needs {n} bytes, {self._end - pos} left")
        self.pos = pos + n
        return pos

    def u8(self, what: str = "u8") -> int:
        pos = self._need(1, what)
        return self._data[pos]

    def u16le(self, what: str = "u16") -> int:
        return int(_U16LE.unpack_from(self._data, self._need(2, what))[0])

    def u32le(self, what: str = "u32") -> int:
        return int(_U32LE.unpack_from(self._data, self._need(4, what))[0])

    def u64le(self, what: str = "u64") -> int:
        return int(_U64LE.unpack_from(self._data, self._need(8, what))[0])

    def u16be(self, what: str = "u16") -> int:
        return int(_U16BE.unpack_from(self._data, self._need(2, what))[0])

    def u32be(self, what: str = "u32") -> int:
        return int(_U32BE.unpack_from(self._data, self._need(4, what))[0])

    def u64be(self, what: str = "u64") -> int:
        return int(_U64BE.unpack_from(self._data, self._need(8, what))[0])

    def take(self, n: int, what: str = "bytes") -> bytes:
        pos = self._need(n, what)
        return self._data[pos : pos + n]

    def tpm2b(self, what: str = "TPM2B", *, max_size: int | None = None) -> bytes:
        """A TPM2B_*: big-endian u16 size then that many bytes."""
        start = self.pos
        size = self.u16be(what + " size")
        if max_size is not None and size > max_size:
            raise self.fail(f"{what}: size {size} exceeds the maximum {max_size}", start)
        return self.take(size, what)

    def expect_end(self, what: str) -> None:
        if self.pos != self._end:
            raise self.fail(f"{what}: {self._end - self.pos} unexpected trailing bytes")
