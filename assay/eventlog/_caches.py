"""Caches of values derived from event data, shared by the logs one verifier appraises.

Nodes with the same firmware log byte-identical events (Secure Boot databases, Boot#### variables,
separators), so a value derived from one node's event serves the next. Every cache here is keyed by
content: the key names the event (bank, type, digest) and a hit also requires the exact same data,
compared byte for byte, so a cached value is a pure function of what it is looked up with and a hit
can only save work, never change an answer.

Whoever verifies logs owns the caches: the service keeps one :class:`LogCaches` per process (in its
context), a command-line run makes its own, and ``verify_log`` without one gives the log a private
set. Each is bounded (untrusted logs choose their sizes) and emptied when full.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Generic, TypeVar

from ..algorithms import HashAlg
from ._workarounds import Workaround

V = TypeVar("V")
Key = tuple[int, int, bytes]  # (bank, event type, digest in that bank)
Coverage = tuple[bool | None, Workaround | None, str]
"""(covered, the coverage workaround it needed, its detail): independent of the event's position.
The detail is empty exactly when a covered event's digest is of all its data."""
DigestCounts = dict[bytes | None, int]


class ContentCache(Generic[V]):
    """Values by (bank, type, digest) and the exact data; bounded by the bytes it holds."""

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
            self.clear()
        self._entries[key] = (data, value)
        self._bytes += len(data)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)


class LogCaches:
    """One cache per purpose, for every log verified with it.

    - ``coverage``: whether an event's data is covered by its digest (``data_covered``);
    - ``variables``: the (name, value) of a well-formed UEFI_VARIABLE_DATA;
    - ``extended``: (bank, PCR, verified value) → how often each digest was extended into it. A
      verified PCR value is a hash chain over exactly the digests extended in order, so the value
      names that multiset: boots whose PCR holds the same value extended the same digests. Only
      PCRs that have events are kept (a PCR without events may hold extends from outside the log).
    - ``chains``: (bank, a PCR's starting value, the digests extended into it in order) → the
      value they replay to. A pure function of the key, which a hit must equal element by element
      (a dict compares keys, not their hashes): nodes with the same firmware extend the same
      sequences into most PCRs, and a replayed extend costs a SHA-256 call each. Bounded by the
      digests it holds (``max_chain_digests``).
    """

    __slots__ = (
        "_chain_digests",
        "_max_chain_digests",
        "_max_extended",
        "chains",
        "coverage",
        "extended",
        "variables",
    )

    def __init__(
        self,
        max_bytes: int = 16 * 1024 * 1024,
        max_extended: int = 65536,
        max_chain_digests: int = 262144,
    ) -> None:
        self.coverage: ContentCache[Coverage] = ContentCache(max_bytes)
        self.variables: ContentCache[tuple[str, bytes]] = ContentCache(max_bytes)
        self.extended: dict[tuple[HashAlg, int, bytes], DigestCounts] = {}
        self.chains: dict[tuple[HashAlg, bytes, tuple[bytes, ...]], bytes] = {}
        self._max_extended = max_extended
        self._max_chain_digests = max_chain_digests
        self._chain_digests = 0

    def keep_chain(self, key: tuple[HashAlg, bytes, tuple[bytes, ...]], value: bytes) -> None:
        """Add one replayed chain, emptying the table first when it would overfill it (a chain
        longer than the whole bound is not kept)."""
        if len(key[2]) > self._max_chain_digests:
            return
        if self._chain_digests + len(key[2]) > self._max_chain_digests:
            self.chains.clear()
            self._chain_digests = 0
        self.chains[key] = value
        self._chain_digests += len(key[2])

    def keep_extended(self, fresh: dict[tuple[HashAlg, int, bytes], DigestCounts]) -> None:
        """Add PCR digest counts, emptying the table first when they would overfill it."""
        if len(self.extended) + len(fresh) > self._max_extended:
            self.extended.clear()
        self.extended.update(fresh)

    def clear(self, *, keep: Collection[str] = ()) -> None:
        """Empty every cache, but those named in ``keep`` (a benchmark's question: what does
        this one save?)."""
        for name in ("coverage", "variables", "extended"):
            if name not in keep:
                getattr(self, name).clear()
        if "chains" not in keep:
            self.chains.clear()
            self._chain_digests = 0
