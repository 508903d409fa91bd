"""Prepares prometheus-client's multiprocess mode for ``serve`` (gunicorn: several workers).

The library decides at import time whether metrics are per process or shared through files in
``PROMETHEUS_MULTIPROC_DIR``, so ``prepare`` runs before anything imports it: it creates a fresh
private directory (mode 0700) unless the operator set one, and empties it of an earlier run's
files. Imports nothing from prometheus_client itself.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare() -> Path:
    path = os.environ.get(ENV)
    if path:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="assay-metrics-"))
        os.environ[ENV] = str(directory)
        atexit.register(_remove, directory, os.getpid())
    return directory


def _remove(directory: Path, owner: int) -> None:
    """At exit, only in the process that made the directory (forked workers inherit atexit)."""
    if os.getpid() == owner:
        shutil.rmtree(directory, ignore_errors=True)
