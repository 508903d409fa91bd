"""What one running app holds: configuration, store, clock and in-process caches.

Created by ``create_app`` (kept in ``app.extensions["assay"]``) or by the CLI, and passed to every
domain function; nothing lives in module globals, and nothing here knows Flask.
Caches are per process (per gunicorn worker) and only ever hold verified or derived data; the
database stays the source of truth, so any worker or instance can serve any request.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from assay.eventlog import LogCaches
from verifier.store import Store, repo
from verifier.store.hotpath import NodeSnapshot

from .config import ServiceConfig
from .golden_catalog import GoldenCatalog, RuntimeCatalog

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A small thread-safe LRU map with hit/miss counters."""

    def __init__(self, size: int) -> None:
        self._size = max(0, size)
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is cached (not counted as a hit or miss, order unchanged)."""
        with self._lock:
            return key in self._data

    def put(self, key: K, value: V) -> None:
        if self._size == 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def discard(self, key: K) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class RateLimiter:
    """Token buckets per client address (``rate`` per second, ``burst`` at once), in one process.

    At most ``clients`` addresses are tracked (least recently seen forgotten first), so the
    limiter's own memory is bounded whatever the number of addresses."""

    def __init__(self, rate: float, burst: float, clients: int = 10_000) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: LruCache[str, tuple[float, float]] = LruCache(clients)

    def allow(self, client: str, now: float) -> bool:
        tokens, last = self._buckets.get(client) or (self.burst, now)
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets.put(client, (tokens - 1.0 if allowed else tokens, now))
        return allowed


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Services:
    config: ServiceConfig
    store: Store
    clock: Callable[[], dt.datetime] = _utcnow
    logs: LruCache[tuple[str, int], object] = field(init=False)
    policies: LruCache[Hashable, tuple[float, dt.datetime, dt.datetime | None, object]] = field(
        init=False
    )
    unauthenticated: RateLimiter = field(init=False)
    log_caches: LogCaches = field(init=False)
    extensions: dict[str, object] = field(default_factory=dict)
    """Per-process state of the add-on modules (EAR keys, metrics, the extender's node cache)."""
    golden: GoldenCatalog = field(init=False)
    runtime: RuntimeCatalog = field(init=False)
    verdicts: LruCache[str, dict[str, object]] = field(init=False)
    reused: LruCache[tuple[str, tuple[str, ...]], object] = field(init=False)
    """Assessments of stored verdicts as a reused verdict returns them, by (digest, golden)."""
    nodes: LruCache[str, tuple[NodeSnapshot, int]] = field(init=False)
    """Node snapshots by name, with the golden version they were read with, kept between a
    node's attestations (``attestation``: only a cache, held to the row's version)."""
    stored_verdicts: LruCache[str, dt.datetime] = field(init=False)
    """Verdict digests this process saw stored, with the row's ``created_at`` as it left it (a
    lower bound: touches only move it forward): a full record refers to one touched within
    ``hotpath.TOUCH_AFTER`` without writing it again (the blob GC's grace is twice that)."""
    holder: str = field(init=False)
    """This process among the instances: who holds a background job's lease."""
    _nonce_key: bytes | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.logs = LruCache(self.config.log_cache_size)
        self.policies = LruCache(64)
        self.unauthenticated = RateLimiter(self.config.client_rate, self.config.client_burst)
        # Values derived from event bytes, shared by every node's log this process verifies.
        self.log_caches = LogCaches()
        # Golden rows as of the store's golden version; verdict documents by digest (immutable).
        self.golden = GoldenCatalog()
        self.runtime = RuntimeCatalog()  # runtime policies, by the same version
        self.verdicts = LruCache(1024)
        self.reused = LruCache(1024)
        self.stored_verdicts = LruCache(1024)
        self.nodes = LruCache(self.config.node_cache_size)
        self.holder = f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"

    def now(self) -> dt.datetime:
        return self.clock()

    def nonce_key(self) -> bytes:
        """The shared nonce key, read (or created) once per process: it never changes."""
        key = self._nonce_key
        if key is None:
            with self.store.write() as db:
                key = self._nonce_key = repo.nonce_key(db, self.now())
        return key

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()
