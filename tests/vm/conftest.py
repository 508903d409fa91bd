"""Session fixtures for the VM suite: every variant is built once and booted once per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from .builder import VARIANTS
from .fleet import REBOOTED, Fleet, boot_fleet

BOOT_FIRST = ("sb", "sb-cloud", "uki", REBOOTED)
"""What the first tests wait for (test_vm_attest's golden sets; the staged rollout, which boots
once more in the test) boots first; the rest follow in ``VARIANTS`` order."""


def _nodes(names: list[str]) -> dict[str, str]:
    """Node name -> variant, in boot order."""
    nodes = {name: name for name in names}
    if "sb" in nodes:
        nodes[REBOOTED] = "sb"
    first = [n for n in BOOT_FIRST if n in nodes]
    return {n: nodes[n] for n in [*first, *(n for n in nodes if n not in first)]}


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Every variant (``builder.VARIANTS``), built and booted in the background, two at a time; a
    lookup in ``fleet.nodes`` waits for that node's boot. Every swtpm is kept running."""
    work = tmp_path_factory.mktemp("vm-fleet")
    # ASSAY_VM_ONLY=ima,ima-sig boots only those (while working on one module's tests)
    only = [n for n in os.environ.get("ASSAY_VM_ONLY", "").split(",") if n]
    nodes = _nodes(only or list(VARIANTS))
    try:
        with boot_fleet(nodes, work) as booted:
            yield booted
            print(f"\nvm fleet: {len(nodes)} nodes, each boot (its end, since the first build):")
            for name, node in booted.nodes.booted().items():
                assert node.result is not None
                ended = booted.ended.get(name, 0.0)
                print(f"  boot {name}: {node.result.seconds:.1f} s (ended at {ended:.1f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
