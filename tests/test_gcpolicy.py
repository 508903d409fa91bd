"""The worker's garbage-collection policy (verifier.service._gcpolicy): short passes over what is
not frozen, and cyclic garbage among frozen objects freed by the periodic full pass."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from verifier.service import _gcpolicy


class _Node:
    """A cached object in a reference cycle (as a parent and its child can be)."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()  # only the collector's own passes run: no automatic one frees a cycle early
    yield
    gc.unfreeze()  # the rest of the test process collects as before
    gc.collect()
    if enabled:
        gc.enable()


def test_a_pass_frees_cyclic_garbage_then_freezes_what_survived() -> None:
    clock = [0.0]
    collector = _gcpolicy.Collector(full_every=3600.0, clock=lambda: clock[0])
    garbage = weakref.ref(_Node())  # unreachable at once, but for its cycle
    kept = _Node()
    assert garbage() is not None
    assert collector.step() >= 1
    assert garbage() is None
    assert gc.get_freeze_count() > 0 and gc.get_count()[1:] == (0, 0)
    assert kept.me is kept


def test_cyclic_garbage_among_frozen_objects_waits_for_the_full_pass() -> None:
    clock = [0.0]
    collector = _gcpolicy.Collector(full_every=3600.0, clock=lambda: clock[0])
    cached = _Node()
    collector.step()  # cached survives: frozen
    gone = weakref.ref(cached)
    del cached  # now garbage, but only its cycle holds it, and it is frozen
    clock[0] = 3599.0
    collector.step()
    assert gone() is not None  # a pass walks only what is not frozen
    clock[0] = 3600.0
    collector.step()  # the full pass: unfreeze, collect, freeze
    assert gone() is None
    clock[0] = 3601.0
    again = _Node()
    collector.step()
    gone_again = weakref.ref(again)
    del again
    collector.step()
    assert gone_again() is not None  # the next full pass is an hour after the last


def test_the_timer_runs_passes_until_stopped() -> None:
    passes: list[int] = []

    class Counting(_gcpolicy.Collector):
        def step(self) -> int:
            passes.append(1)
            return 0

    stop = _gcpolicy.start(interval=0.01, collector=Counting())
    for _ in range(500):
        if len(passes) >= 3:
            break
        stop.wait(0.01)
    stop.set()
    assert len(passes) >= 3
