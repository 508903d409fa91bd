"""A fleet of booted VM nodes: built once, booted once, two at a time.

Every TPM is manufactured first (one by one: they share the project-local CA), then the guests boot
in parallel on the host's cores (each QEMU under TCG keeps one core busy). After ``boot_fleet``
every node's guest has powered off and its swtpm still runs, holding the boot's PCRs.

:class:`BackgroundBoots` is the same, without blocking: the boots run in worker threads while the
caller does other work (the demo builds golden sets meanwhile), and ``wait`` reports each boot as
it ends.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path

from . import builder
from .runner import BootResult, VmNode


@dataclass(frozen=True, slots=True)
class Fleet:
    nodes: Mapping[str, VmNode]
    ca_dir: Path
    seconds: float  # wall time of build + all boots

    def result(self, name: str) -> BootResult:
        res = self.nodes[name].result
        assert res is not None, f"{name} did not boot"
        return res


class BackgroundBoots:
    """Boot ``nodes`` (name -> VmNode) in ``parallel`` worker threads; ``close`` stops them all.

    ``close`` is safe at any moment, also while a boot runs: it cancels the boots not started,
    kills every QEMU and swtpm by the pid its node started, waits for the workers to notice, and
    kills again whatever a worker started in between.
    """

    def __init__(self, nodes: Mapping[str, VmNode], *, parallel: int = 2) -> None:
        self.nodes = dict(nodes)
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="vm-boot")
        self._futures: dict[Future[BootResult], str] = {}
        self.started = time.monotonic()

    def start(self) -> None:
        """Manufacture and start every TPM (one by one), then submit every boot."""
        for node in self.nodes.values():
            node.start_tpm()
        self.started = time.monotonic()
        self._futures = {self._pool.submit(n.boot): name for name, n in self.nodes.items()}

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
        self._pool.shutdown(wait=False, cancel_futures=True)
        for node in self.nodes.values():
            node.close()
        self._pool.shutdown(wait=True)  # a boot whose QEMU was killed ends at once
        for node in self.nodes.values():
            node.close()


@contextlib.contextmanager
def boot_fleet(
    names: Sequence[str], workdir: Path, *, parallel: int = 2, cache: Path | None = None
) -> Iterator[Fleet]:
    """Build and boot ``names``; stop every swtpm and QEMU when the block ends."""
    started = time.monotonic()
    ca_dir = workdir / "ca"
    images = {n: builder.build(builder.VARIANTS[n], cache) for n in names}
    boots = BackgroundBoots(
        {n: VmNode(images[n], workdir / n, ca_dir) for n in names}, parallel=parallel
    )
    try:
        boots.start()
        boots.wait()
        yield Fleet(boots.nodes, ca_dir, time.monotonic() - started)
    finally:
        boots.close()
