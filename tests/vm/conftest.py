"""Session fixtures for the VM suite: every variant is built once and booted once per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from .builder import VARIANTS
from .fleet import Fleet, boot_fleet


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Every variant booted (``builder.VARIANTS``); swtpm kept running."""
    work = tmp_path_factory.mktemp("vm-fleet")
    # ASSAY_VM_ONLY=ima,ima-sig boots only those (while working on one module's tests)
    only = [n for n in os.environ.get("ASSAY_VM_ONLY", "").split(",") if n]
    names = only or list(VARIANTS)
    try:
        with boot_fleet(names, work) as booted:
            print(f"\nvm fleet: built and booted {len(names)} nodes in {booted.seconds:.1f} s")
            for name in names:
                print(f"  boot {name}: {booted.result(name).seconds:.1f} s")
            yield booted
    finally:
        shutil.rmtree(work, ignore_errors=True)
