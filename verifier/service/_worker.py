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

import select
import selectors
import sys
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

    def patch(self) -> None:
        super().patch()
        cooperative_psycopg()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        client.settimeout(IO_TIMEOUT)
        AsyncWorker.handle(self, listener, client, addr)


BRIEF_WAIT_MS = 2
"""A PostgreSQL answer is first waited for this long without yielding to gevent."""


def cooperative_psycopg() -> None:
    """Make psycopg wait for PostgreSQL through gevent in this (monkey-patched) worker, after a
    brief wait that does not yield.

    psycopg chooses how it waits on a connection's socket once, when it is first imported: in C
    (``wait_c``), unless gevent has patched ``select`` by then. The master imports it before it
    forks (the signing key and the schema check open the database first), so each worker waited
    in C, and a statement waiting for a lock stopped all the worker's requests: measured, a
    ``/healthz`` waited 6 s behind two statements waiting for a lock.

    Yielding at every round trip costs throughput instead: the greenlet that took over runs a
    whole appraisal (about a millisecond) before the waiting transaction goes on, so
    transactions and pooled connections are held longer; measured with 64 requests in flight,
    first attestations fell from 290–410/s to 180–200/s and p99 rose from 120–190 ms to over
    500 ms. So each wait first polls the socket natively for ``BRIEF_WAIT_MS`` (a loopback
    answer takes a fraction of that) and only then waits cooperatively (psycopg's own
    ``wait_poll``, which gevent makes cooperative). Connecting uses gevent's selector, not the
    one psycopg bound at import."""
    waiting: Any = sys.modules.get("psycopg.waiting")
    if waiting is None:  # imported after the patch, it chooses a cooperative wait itself
        return
    from gevent import monkey

    native_poll = monkey.get_original("select", "poll")
    masks = {
        waiting.Wait.R: select.POLLIN,
        waiting.Wait.W: select.POLLOUT,
        waiting.Wait.RW: select.POLLIN | select.POLLOUT,
    }

    def natively_first(gen: Any, fileno: int) -> Any:
        """``gen`` (psycopg's protocol: it yields what to wait for, is sent what is ready), with
        each wait tried natively first; only the waits that take longer are passed on."""
        poll = native_poll()
        try:
            s = next(gen)
            poll.register(fileno, masks[s])
            while True:
                events = poll.poll(BRIEF_WAIT_MS)
                ev = events[0][1] if events else 0
                ready = (waiting.Ready.R if ev & select.POLLIN else 0) | (
                    waiting.Ready.W if ev & select.POLLOUT else 0
                )
                if not ready:  # not yet (or an error, which psycopg's own wait reports)
                    ready = yield s
                s = gen.send(ready)
                poll.modify(fileno, masks[s])
        except StopIteration as done:
            return done.value

    def wait(gen: Any, fileno: int, interval: float = 0.0, timeout: float | None = None) -> Any:
        return waiting.wait_poll(natively_first(gen, fileno), fileno, interval, timeout)

    waiting.wait = wait
    waiting.DefaultSelector = selectors.DefaultSelector  # gevent's, once patched
