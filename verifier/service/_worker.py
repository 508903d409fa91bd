"""The gunicorn worker the verifier runs: gevent, with a bounded wait on every socket read.

One greenlet per connection, so an idle or slow client costs a socket and a few kilobytes, never a
worker: ``/healthz`` and every other request keep being served beside hundreds of them
(docs/operations.md says why gevent rather than threads). Bounds on what a slow client can hold:
gunicorn's gevent worker gives a request line and headers ``keepalive`` seconds in all, each
socket read waits at most ``IO_TIMEOUT`` seconds, a body at most ``body_timeout`` (``_http``), and
a worker holds at most ``worker_connections`` connections.

Imported only inside a gunicorn worker process (it imports gevent, which the worker has already
monkey-patched the standard library for).
"""

from __future__ import annotations

from typing import Any

from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

IO_TIMEOUT = 10.0


class VerifierWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker with a per-read socket timeout on each client connection."""

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        client.settimeout(IO_TIMEOUT)
        AsyncWorker.handle(self, listener, client, addr)
