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

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

IO_TIMEOUT = 10.0


class OneWriteResponse(wsgi.Response):  # type: ignore[misc]
    """gunicorn's response, with the headers and a first body chunk that fits the declared
    length sent in one write: every verifier answer is one small JSON body, and a second send
    per response (headers, then body) cost about a tenth of a worker's CPU on the evidence hot
    path. Anything else (chunked, HEAD, longer bodies) goes through gunicorn's own code."""

    def write(self, arg: Any) -> None:
        simple = (
            not self.headers_sent  # type: ignore[has-type]
            and not self.chunked
            and not self._omits_body
            and isinstance(arg, bytes)
            and self.response_length is not None
            and len(arg) == self.response_length
        )
        if not simple:
            super().write(arg)
            return
        tosend = self.default_headers()
        tosend.extend(f"{k}: {v}\r\n" for k, v in self.headers)
        head = util.to_bytestring("{}\r\n".format("".join(tosend)), "latin-1")
        self.headers_sent = True
        self.sent += len(arg)
        util.write(self.sock, head + arg)


wsgi.Response = OneWriteResponse  # wsgi.create() builds each response from this name


class VerifierWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker with a per-read socket timeout on each client connection."""

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        client.settimeout(IO_TIMEOUT)
        AsyncWorker.handle(self, listener, client, addr)
