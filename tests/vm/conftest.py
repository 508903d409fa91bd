"""Session fixtures for the VM suite: every variant is built once and booted once per session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from .builder import VARIANTS
from .fleet import Fleet, boot_fleet


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """All variants booted (sb, sb-cmdline, sb-cloud, sb-shell, uki, uki-sdboot); swtpm kept running."""
    work = tmp_path_factory.mktemp("vm-fleet")
    try:
        with boot_fleet(list(VARIANTS), work) as booted:
            print(f"\nvm fleet: built and booted {len(VARIANTS)} nodes in {booted.seconds:.1f} s")
            for name in VARIANTS:
                print(f"  boot {name}: {booted.result(name).seconds:.1f} s")
            yield booted
    finally:
        shutil.rmtree(work, ignore_errors=True)
