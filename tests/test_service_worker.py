"""What each gunicorn worker does once its app is loaded (``server._post_worker_init``)."""

from __future__ import annotations

import gc
from types import SimpleNamespace

from verifier.service import server


def test_a_started_worker_keeps_its_startup_objects_out_of_full_collections() -> None:
    """A full collection stops the whole gevent worker while it scans every tracked object; what
    the worker loaded to start (modules, metadata, the app) is frozen out of those scans."""
    worker = SimpleNamespace(wsgi=SimpleNamespace(extensions={"assay": None}))  # no webhooks
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        server._post_worker_init(worker)
        assert gc.get_freeze_count() > 10_000  # the test process's modules, at least
    finally:
        gc.unfreeze()
