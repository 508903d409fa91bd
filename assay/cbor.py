"""A strict CBOR decoder (RFC 8949 subset) for untrusted bytes: the evidence bundle and CoRIM.

The evidence bundle (docs/evidence.md) is made of maps, arrays, byte and text strings, integers and
the simple values false/true/null. Everything else is refused rather than interpreted: semantic tags
(bignums, regular expressions, MIME messages, dates: each a way to make a decoder spend CPU or
raise something unexpected), undefined and other simple values, indefinite lengths, duplicate map
keys, map keys other than integers and text (floats decode to ``float`` and no field accepts one),
nesting deeper than ``max_depth``, more than ``max_items`` items, and bytes after the top-level
item. A length is checked against the bytes left before anything is sliced, so nothing is allocated
from an unchecked length. Every problem is one ``CborError`` naming the offset.

CoRIM (golden/corim.py) is built from tags, so ``tags=True`` returns each tag as an *uninterpreted*
``cbor2.CBORTag(number, content)``: no number gets a meaning here (a bignum stays a tag around its
bytes); the caller checks the numbers it expects. A tag counts as one level of nesting.
"""

from __future__ import annotations

import struct
from typing import Any

from cbor2 import CBORTag

MAX_DEPTH = 8
MAX_ITEMS = 4096
_SIMPLE = {20: False, 21: True, 22: None}


class CborError(ValueError):
    """The bytes are not CBOR of the accepted profile."""


def _float(arg: int, info_bytes: int) -> float:
    fmt = {2: ">e", 4: ">f", 8: ">d"}[info_bytes]
    value: float = struct.unpack(fmt, arg.to_bytes(info_bytes, "big"))[0]
    return value


class _Reader:
    """One decode: the bytes, the position, and the budgets. ``item`` reads the head inline (no
    call per head or slice): the evidence bundle is read on every attestation."""

    __slots__ = ("data", "end", "items_left", "max_depth", "max_items", "pos", "tags")

    def __init__(self, data: bytes, max_items: int, max_depth: int, tags: bool) -> None:
        self.data = data
        self.end = len(data)
        self.pos = 0
        self.max_items = max_items
        self.items_left = max_items
        self.max_depth = max_depth
        self.tags = tags

    def _short(self, at: int, n: int) -> CborError:
        return CborError(f"offset {at}: {n} bytes announced, {self.end - at} left")

    def item(self, depth: int) -> Any:
        data, at = self.data, self.pos
        self.items_left -= 1
        if self.items_left < 0:
            raise CborError(f"offset {at}: more than {self.max_items} items")
        if at >= self.end:
            raise self._short(at, 1)
        initial = data[at]
        major, arg = initial >> 5, initial & 0x1F
        pos = at + 1
        if major == 6 and not self.tags:
            raise CborError(f"offset {at}: semantic tags are not accepted")
        if arg >= 24:
            if arg > 27:
                what = "indefinite lengths are" if arg == 31 else f"additional info {arg} is"
                raise CborError(f"offset {at}: {what} not accepted")
            if major == 7 and arg == 24:
                raise CborError(f"offset {at}: extended simple values are not accepted")
            n = 1 << (arg - 24)
            if pos + n > self.end:
                raise self._short(pos, n)
            arg = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        if major == 2 or major == 3:
            stop = pos + arg
            if stop > self.end:
                raise self._short(pos, arg)
            self.pos = stop
            if major == 2:
                return data[pos:stop]
            try:
                return data[pos:stop].decode("utf-8")
            except UnicodeDecodeError:
                raise CborError(f"offset {at}: text string is not UTF-8") from None
        self.pos = pos
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 7:
            if initial >= 0xF9:  # half, single or double float: decoded, never interpreted
                return _float(arg, 1 << ((initial & 0x1F) - 24))
            if arg not in _SIMPLE:
                raise CborError(f"offset {at}: simple value {arg} is not accepted")
            return _SIMPLE[arg]
        if depth >= self.max_depth:
            raise CborError(f"offset {at}: nested deeper than {self.max_depth}")
        if major == 6:  # only with tags=True (refused above otherwise): never interpreted
            return CBORTag(arg, self.item(depth + 1))
        if arg > self.end - pos:  # every element takes at least one byte
            raise CborError(f"offset {at}: {arg} elements announced, {self.end - pos} bytes left")
        depth += 1
        if major == 4:
            return [self.item(depth) for _ in range(arg)]
        out: dict[Any, Any] = {}
        for _ in range(arg):
            key_at = self.pos
            key = self.item(depth)
            if type(key) is not str and type(key) is not int:
                raise CborError(f"offset {key_at}: map keys must be integers or text")
            if key in out:
                raise CborError(f"offset {key_at}: duplicate map key")
            out[key] = self.item(depth)
        return out


def loads_strict(
    data: bytes, *, max_items: int = MAX_ITEMS, max_depth: int = MAX_DEPTH, tags: bool = False
) -> Any:
    """Decode exactly one item that uses all of ``data``; CborError otherwise."""
    r = _Reader(bytes(data), max_items, max_depth, tags)
    if not r.data:
        raise CborError("empty input")
    value = r.item(0)
    if r.pos != r.end:
        raise CborError(f"offset {r.pos}: {r.end - r.pos} bytes after the end of the item")
    return value
