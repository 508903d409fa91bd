"""The cyclic garbage collector in a served worker: short pauses, however much the caches hold.

A full collection stops a gevent worker, and every request it holds, while it walks every
tracked object. What the worker loaded to start (modules, SQLAlchemy's metadata, the app) made
that 100-150 ms, so the first pass, at start, freezes it. Once the caches hold a fleet (node snapshots, parsed AKs, verified logs) that
took 60-120 ms at 10,000 nodes, one per worker about once a minute, and it grows with the fleet
(measured with ``scripts/_fleet.py``). So each worker collects on a timer and then freezes what
survived (``gc.freeze``): a pass walks only what became long-lived since the last one (a few
milliseconds), and CPython's own full passes, which wait until a quarter of the long-lived
objects are new, hardly ever come. Frozen objects are still freed by reference counting; only
cyclic garbage among them waits for the periodic full pass (``full_every``: unfreeze, collect,
freeze), the one long pause left.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("assay.verifier.gc")

INTERVAL = 2.0
"""Seconds between two collections of what is not frozen."""
FULL_EVERY = 3600.0
"""Seconds between two full passes over everything (what frees cyclic garbage once frozen)."""


class Collector:
    """Collect what is not frozen, then freeze the survivors; everything, every ``full_every``."""

    def __init__(
        self, full_every: float = FULL_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.full_every = full_every
        self.clock = clock
        self._last_full = clock()

    def step(self) -> int:
        """One pass; the unreachable objects it found."""
        now = self.clock()
        if now - self._last_full >= self.full_every:
            gc.unfreeze()  # this pass walks everything, frozen cyclic garbage included
            self._last_full = now
        found = gc.collect()
        gc.freeze()
        return found


def start(interval: float = INTERVAL, collector: Collector | None = None) -> threading.Event:
    """Run ``collector`` once now, then every ``interval`` seconds in a daemon thread (a greenlet
    in a gevent worker) until the returned event is set."""
    stop = threading.Event()
    every = collector or Collector()
    every.step()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                every.step()
            except Exception:  # a bug must not end the loop silently
                log.exception("garbage collection pass failed")

    threading.Thread(target=loop, name="assay-gc", daemon=True).start()
    return stop
