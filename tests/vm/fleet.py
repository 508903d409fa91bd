"""A fleet of booted VM nodes for the test session: built once, booted once, two at a time.

Every TPM is manufactured first (one by one: they share the project-local CA), then the guests boot
in parallel on the host's cores (each QEMU under TCG keeps one core busy). After ``boot_fleet``
every node's guest has powered off and its swtpm still runs, holding the boot's PCRs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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


@contextlib.contextmanager
def boot_fleet(
    names: Sequence[str], workdir: Path, *, parallel: int = 2, cache: Path | None = None
) -> Iterator[Fleet]:
    """Build and boot ``names``; stop every swtpm and QEMU when the block ends."""
    started = time.monotonic()
    ca_dir = workdir / "ca"
    images = {n: builder.build(builder.VARIANTS[n], cache) for n in names}
    nodes = {n: VmNode(images[n], workdir / n, ca_dir) for n in names}
    try:
        for node in nodes.values():
            node.start_tpm()
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            for future in [pool.submit(node.boot) for node in nodes.values()]:
                future.result()
        yield Fleet(nodes, ca_dir, time.monotonic() - started)
    finally:
        for node in nodes.values():
            node.close()
