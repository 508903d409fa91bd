"""A fleet of booted VM nodes: built once, booted once, two at a time.

The guests boot in parallel on the host's cores (each QEMU under TCG keeps one core busy); every
TPM is manufactured right before its guest boots, one at a time (they share the project-local
CA). After its boot a node's guest has powered off and its swtpm still runs, holding the boot's
PCRs.

:func:`boot_fleet` hands the fleet out at once and goes on building and booting in the background:
looking a node up waits until that node has booted, so the first tests run while the last nodes
still boot. :class:`BackgroundBoots` boots nodes already built in worker threads while the caller
does other work (the demo builds golden sets meanwhile); ``wait`` reports each boot as it ends.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path

from . import builder
from .runner import BootResult, VmBootError, VmNode

REBOOTED = "sb-reboot"
"""A second node of the sb variant, a VM and TPM of its own, for the test that reboots it
(test_vm_attest's staged rollout): booted with the fleet rather than inside that test."""


class BackgroundBoots:
    """Boot ``nodes`` (name -> VmNode) in ``parallel`` worker threads; ``close`` stops them all.

    ``close`` is safe at any moment, also while a boot runs: it cancels the boots not started,
    kills every QEMU and swtpm by the pid its node started, waits for the workers to notice, and
    kills again whatever a worker started in between.
    """

    def __init__(self, nodes: Mapping[str, VmNode] | None = None, *, parallel: int = 2) -> None:
        self.nodes = dict(nodes or {})
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="vm-boot")
        self._futures: dict[Future[BootResult], str] = {}
        self._manufacture = threading.Lock()  # one swtpm_setup at a time: they share the CA
        self._lock = threading.Lock()  # guards nodes, _futures and _closed against close()
        self._closed = False
        self.started = time.monotonic()

    def start(self) -> None:
        """Manufacture and start every TPM (one by one), then submit every boot."""
        for node in self.nodes.values():
            node.start_tpm()
        self.started = time.monotonic()
        self._futures = {self._pool.submit(n.boot): name for name, n in self.nodes.items()}

    def add(self, name: str, node: VmNode) -> Future[BootResult]:
        """Boot one more node: its TPM is manufactured by the worker, right before its boot."""
        with self._lock:
            if self._closed:
                node.close()
                raise VmBootError(f"{name}: the fleet was closed before its boot")
            self.nodes[name] = node
            future = self._pool.submit(self._manufacture_and_boot, node)
            self._futures[future] = name
        return future

    def _manufacture_and_boot(self, node: VmNode) -> BootResult:
        with self._manufacture:
            node.start_tpm()
        return node.boot()

    def wait(
        self,
        on_boot: Callable[[str, BootResult], None] | None = None,
        *,
        on_tick: Callable[[Sequence[str], float], None] | None = None,
        tick: float = 15.0,
    ) -> dict[str, BootResult]:
        """Every node's boot result; ``on_boot`` is called as each ends, ``on_tick`` (the nodes
        still booting, seconds since the boots started) every ``tick`` seconds meanwhile. The
        first failed boot raises its error."""
        pending = set(self._futures)
        results: dict[str, BootResult] = {}
        while pending:
            done, pending = wait_futures(pending, timeout=tick, return_when=FIRST_COMPLETED)
            for future in done:
                name = self._futures[future]
                results[name] = future.result()
                if on_boot is not None:
                    on_boot(name, results[name])
            if pending and not done and on_tick is not None:
                on_tick(sorted(self._futures[f] for f in pending), time.monotonic() - self.started)
        return results

    def close(self) -> None:
        with self._lock:
            self._closed = True
            nodes = list(self.nodes.values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for node in nodes:
            node.close()
        self._pool.shutdown(wait=True)  # a boot whose QEMU was killed ends at once
        for node in nodes:
            node.close()


class BootedNodes(Mapping[str, VmNode]):
    """The fleet's nodes by name; a lookup waits until that node has booted (or raises why it
    did not: its build or its boot failed)."""

    def __init__(self, futures: Mapping[str, Future[VmNode]]) -> None:
        self._futures = dict(futures)

    def __getitem__(self, name: str) -> VmNode:
        return self._futures[name].result()

    def __contains__(self, name: object) -> bool:
        return name in self._futures

    def __iter__(self) -> Iterator[str]:
        return iter(self._futures)

    def __len__(self) -> int:
        return len(self._futures)

    def booted(self) -> dict[str, VmNode]:
        """The nodes that have booted so far (without waiting)."""
        return {
            name: f.result()
            for name, f in self._futures.items()
            if f.done() and not f.cancelled() and f.exception() is None
        }


@dataclass(frozen=True, slots=True)
class Fleet:
    nodes: BootedNodes
    ca_dir: Path
    started: float  # time.monotonic() when the first build began
    ended: dict[str, float] = field(default_factory=dict)  # node -> seconds since ``started``

    def result(self, name: str) -> BootResult:
        res = self.nodes[name].result
        assert res is not None, f"{name} did not boot"
        return res


def _build_all(
    fleet: Fleet,
    variants: Mapping[str, str],
    futures: Mapping[str, Future[VmNode]],
    boots: BackgroundBoots,
    workdir: Path,
    cache: Path | None,
    stop: threading.Event,
) -> None:
    """Build each node's image in turn and hand the node to ``boots`` as soon as it is built."""
    for name, variant in variants.items():
        node_future = futures[name]
        if stop.is_set():
            node_future.set_exception(VmBootError(f"{name}: the fleet was closed before its build"))
            continue
        try:
            image = builder.build(builder.VARIANTS[variant], cache)
            boot = boots.add(name, VmNode(image, workdir / name, workdir / "ca"))
        except Exception as exc:  # handed to whoever looks the node up
            node_future.set_exception(exc)
            continue
        boot.add_done_callback(lambda done, n=name: _settle(fleet, futures[n], done, boots, n))


def _settle(
    fleet: Fleet,
    node_future: Future[VmNode],
    boot: Future[BootResult],
    boots: BackgroundBoots,
    name: str,
) -> None:
    fleet.ended[name] = time.monotonic() - fleet.started
    if boot.cancelled():
        node_future.set_exception(VmBootError(f"{name}: the fleet was closed before its boot"))
    elif (exc := boot.exception()) is not None:
        node_future.set_exception(exc)
    else:
        node_future.set_result(boots.nodes[name])


@contextlib.contextmanager
def boot_fleet(
    variants: Mapping[str, str], workdir: Path, *, parallel: int = 2, cache: Path | None = None
) -> Iterator[Fleet]:
    """Build and boot the nodes ``variants`` names (node name -> variant of ``builder.VARIANTS``),
    in that order, in the background; stop every swtpm and QEMU when the block ends."""
    futures: dict[str, Future[VmNode]] = {name: Future() for name in variants}
    boots = BackgroundBoots(parallel=parallel)
    stop = threading.Event()
    fleet = Fleet(BootedNodes(futures), workdir / "ca", time.monotonic())
    building = threading.Thread(
        target=_build_all,
        args=(fleet, variants, futures, boots, workdir, cache, stop),
        name="vm-build",
        daemon=True,
    )
    building.start()
    try:
        yield fleet
    finally:
        stop.set()
        boots.close()  # from now on the builder's nodes are refused (and closed)
        building.join()  # the image it builds, if any, is finished: the cache stays whole
