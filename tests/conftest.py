"""Shared fixtures: the corpus of real event logs and a real swtpm for integration tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "eventlogs"


# Modules that fetch the same .deb files into one cache (~/.cache/assay/debs): one worker at a time.
SHARED_DEB_CACHE = frozenset(("test_golden.py", "test_golden_apt.py", "test_ima_golden_runtime.py"))


def pytest_configure(config: pytest.Config) -> None:
    if not CORPUS.is_dir():
        raise pytest.UsageError(f"event log corpus not found at {CORPUS}")


def work_unit(nodeid: str) -> str:
    """What one pytest-xdist worker runs whole (``scripts/test``): a module, so that its
    module-scoped servers start once; the VM suite, whose one fleet of booted machines its four
    modules share; and the modules sharing the .deb cache."""
    path = nodeid.split("::", 1)[0]
    name = path.rsplit("/", 1)[-1]
    if path.startswith("tests/vm/") and name != "test_vm_runner.py":  # the VM-marked modules
        return "vm"
    return "debs" if name in SHARED_DEB_CACHE else path


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` by ``work_unit``. (xdist's ``loadgroup`` marks are not seen under
    pytest 9: xdist 3.8 renames ``item._nodeid``, which pytest 9 no longer reads.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByWorkUnit(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The VM suite first: with ``--no-loadscope-reorder`` the work units are dealt out in
    collection order, so its boots (minutes of CPU) start at once and run beside everything
    else instead of after it."""
    items.sort(key=lambda item: work_unit(item.nodeid) != "vm")  # stable: the order is kept


@pytest.fixture(scope="session")
def corpus() -> Path:
    return CORPUS


def load_manifest() -> list[dict[str, str]]:
    lines = (CORPUS / "MANIFEST.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:] if line.strip()]


def load_expected(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
