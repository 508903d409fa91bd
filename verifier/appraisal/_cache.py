"""A small cache of values derived from event data, shared across logs and keyed by content.

Nodes with the same firmware log byte-identical events (Secure Boot databases, Boot#### variables),
so a value decoded from one node's event is reused for the next. The key names the event (bank,
type, digest) and a hit also requires the exact same data, compared byte for byte: the cached value
is a pure function of that data, so a hit can only save work, never change an answer.
"""

from __future__ import annotations

from typing import Generic, TypeVar

V = TypeVar("V")
Key = tuple[int, int, bytes]  # (bank, event type, digest in that bank)


class ContentCache(Generic[V]):
    """Bounded by the bytes it holds (untrusted logs choose their sizes); emptied when full."""

    __slots__ = ("_bytes", "_entries", "_max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self._entries: dict[Key, tuple[bytes, V]] = {}
        self._bytes = 0
        self._max_bytes = max_bytes

    def get(self, key: Key, data: bytes) -> V | None:
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] == data else None

    def put(self, key: Key, data: bytes, value: V) -> None:
        if self._bytes + len(data) > self._max_bytes:
            self._entries.clear()
            self._bytes = 0
        self._entries[key] = (data, value)
        self._bytes += len(data)
