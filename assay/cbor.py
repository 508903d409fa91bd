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


class _Reader:
    def __init__(self, data: bytes, max_items: int, max_depth: int, tags: bool) -> None:
        self.data = data
        self.pos = 0
        self.max_items = max_items
        self.items_left = max_items
        self.max_depth = max_depth
        self.tags = tags

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise CborError(f"offset {self.pos}: {n} bytes announced, {self.remaining} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def head(self) -> tuple[int, int, int]:
        """(major type, argument, offset of the head) of the next item."""
        at = self.pos
        self.items_left -= 1
        if self.items_left < 0:
            raise CborError(f"offset {at}: more than {self.max_items} items")
        (initial,) = self.take(1)
        major, info = initial >> 5, initial & 0x1F
        if major == 6 and not self.tags:
            raise CborError(f"offset {at}: semantic tags are not accepted")
        if info < 24:
            return major, info, at
        if info > 27:
            what = "indefinite lengths are" if info == 31 else f"additional info {info} is"
            raise CborError(f"offset {at}: {what} not accepted")
        if major == 7 and info == 24:
            raise CborError(f"offset {at}: extended simple values are not accepted")
        arg = int.from_bytes(self.take(1 << (info - 24)), "big")
        return major, arg, at


def _float(arg: int, info_bytes: int) -> float:
    fmt = {2: ">e", 4: ">f", 8: ">d"}[info_bytes]
    value: float = struct.unpack(fmt, arg.to_bytes(info_bytes, "big"))[0]
    return value


def _scalar(r: _Reader, major: int, arg: int, at: int) -> Any:
    if major == 0:
        return arg
    if major == 1:
        return -1 - arg
    if major == 2:
        return r.take(arg)
    if major == 3:
        try:
            return r.take(arg).decode("utf-8")
        except UnicodeDecodeError:
            raise CborError(f"offset {at}: text string is not UTF-8") from None
    if r.data[at] >= 0xF9:  # half, single or double float: decoded, never interpreted further
        return _float(arg, 1 << ((r.data[at] & 0x1F) - 24))
    if arg not in _SIMPLE:
        raise CborError(f"offset {at}: simple value {arg} is not accepted")
    return _SIMPLE[arg]


def _check_length(r: _Reader, arg: int, at: int) -> None:
    if arg > r.remaining:  # every element takes at least one byte
        raise CborError(f"offset {at}: {arg} elements announced, {r.remaining} bytes left")


def _item(r: _Reader, depth: int) -> Any:
    major, arg, at = r.head()
    if major not in (4, 5, 6):
        return _scalar(r, major, arg, at)
    if depth >= r.max_depth:
        raise CborError(f"offset {at}: nested deeper than {r.max_depth}")
    if major == 6:  # only with tags=True (head() refuses it otherwise): never interpreted
        return CBORTag(arg, _item(r, depth + 1))
    _check_length(r, arg, at)
    if major == 4:
        return [_item(r, depth + 1) for _ in range(arg)]
    out: dict[Any, Any] = {}
    for _ in range(arg):
        key_at = r.pos
        key = _item(r, depth + 1)
        if type(key) not in (int, str):
            raise CborError(f"offset {key_at}: map keys must be integers or text")
        if key in out:
            raise CborError(f"offset {key_at}: duplicate map key")
        out[key] = _item(r, depth + 1)
    return out


def loads_strict(
    data: bytes, *, max_items: int = MAX_ITEMS, max_depth: int = MAX_DEPTH, tags: bool = False
) -> Any:
    """Decode exactly one item that uses all of ``data``; CborError otherwise."""
    r = _Reader(bytes(data), max_items, max_depth, tags)
    if not r.data:
        raise CborError("empty input")
    value = _item(r, 0)
    if r.remaining:
        raise CborError(f"offset {r.pos}: {r.remaining} bytes after the end of the item")
    return value
