"""What each gunicorn worker does once its app is loaded (``server._post_worker_init``)."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import psycopg
import pytest
import requests

from testkit.service import serve
from tests.postgres import postgres_server, postgres_url  # noqa: F401
from verifier.service import _gcpolicy, server
from verifier.service.config import ServiceConfig
from verifier.store import Store, upgrade


def test_a_started_worker_keeps_its_startup_objects_out_of_full_collections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full collection stops the whole gevent worker while it scans every tracked object; what
    the worker loaded to start (modules, metadata, the app) is frozen out of those scans at once,
    and the worker's collection timer is running."""
    worker = SimpleNamespace(wsgi=SimpleNamespace(extensions={"assay": None}))  # no webhooks
    timers: list[threading.Event] = []
    real = _gcpolicy.start
    monkeypatch.setattr(_gcpolicy, "start", lambda: timers.append(real()))
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        server._post_worker_init(worker)
        assert gc.get_freeze_count() > 10_000  # the test process's modules, at least
        assert len(timers) == 1
    finally:
        for stop in timers:  # the test process keeps its own collector
            stop.set()
        gc.unfreeze()


def test_a_request_waiting_on_postgres_leaves_the_worker_serving_others(
    postgres_url: str,  # noqa: F811
) -> None:
    """Every PostgreSQL round trip waits cooperatively, also when the master imported psycopg
    before the worker monkey-patched (it does: the signing key and migrations run first, and
    psycopg picks its wait function at import). One worker; a request whose statement waits on
    a lock held elsewhere (up to the lock timeout) must not hold up ``/healthz`` meanwhile."""
    schema = Store(postgres_url)
    upgrade(schema)
    schema.close()
    config = ServiceConfig(database=postgres_url, workers=1)
    with serve(config) as served:
        plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain) as locker:
            locker.execute("LOCK TABLE nodes IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            waiting = threading.Thread(
                target=requests.post,
                args=(f"{served.url}/v1/nodes/n1/challenge",),
                kwargs={"json": {}, "timeout": 30},
            )
            waiting.start()
            time.sleep(0.5)  # the challenge's read is waiting for the lock now
            answered = requests.get(f"{served.url}/healthz", timeout=30)
            took = time.monotonic() - started
            locker.rollback()
        waiting.join()
    assert answered.status_code == 200
    assert took < 1.5, f"/healthz waited {took:.1f} s behind a statement waiting on PostgreSQL"


def test_psycopg_imported_before_the_patch_is_made_cooperative() -> None:
    """The import order of the master and a worker, in a fresh interpreter."""
    code = (
        "import psycopg, psycopg.waiting as w\n"
        "from gevent import monkey; monkey.patch_all()\n"
        "import selectors\n"
        "assert w.wait is w.wait_c, 'psycopg waits in C after an early import'\n"
        "from verifier.service._worker import cooperative_psycopg\n"
        "cooperative_psycopg()\n"
        "assert w.wait.__module__ == 'verifier.service._worker', w.wait\n"
        "assert w.DefaultSelector is selectors.DefaultSelector\n"
        "assert 'gevent' in selectors.DefaultSelector.__module__\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
