"""A minimal HTTP/1.1 client for the fleet simulator (scaffolding: LOAD GENERATION ONLY).

The fleet simulator shares two cores with the verifier it measures, so every microsecond it spends
per request is taken from the server. ``http.client`` on 64 threads cost 0.3–0.7 ms of CPU per
attestation; on this virtual machine most of a request's cost is waking up (a thread, an event
loop) with cold caches, so ``Loop`` runs every round in flight on one thread with one selector,
handles every answer that has arrived at each wake-up, and sends what those answers and the due
nodes ask for together.

A round is sans-IO: a generator that yields a ``Request`` and is sent the ``Answer`` (status,
decoded JSON), until it returns its result — the protocol reads as straight-line code and the
loop knows nothing of attestation.

What it speaks is what our gunicorn verifier speaks: ``POST`` with ``Content-Length`` on kept-alive
connections; answers with ``Content-Length`` (every verifier answer has one), or read to the close
without it. ``Connection: close`` (and HTTP/1.0) ends the connection after the answer; a chunked
answer is refused (``ProtocolError``: the verifier never sends one, and guessing would hide it).
A connection that drops before a complete answer (the server's keep-alive timeout, a killed
worker), a refused connection, or an answer that is not HTTP or not JSON is retried once on a new
connection; a request not answered within ``timeout`` seconds fails with ``TimeoutError`` and is
not retried (the instance is frozen or overloaded). ``Client`` is the same protocol, blocking, for
threads.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import selectors
import socket
import struct
import sys
import time
import urllib.parse
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Answer = tuple[int, Any]
"""(status, decoded JSON body; ``{}`` for an empty body)."""


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    body: bytes
    headers: Mapping[str, str]


Round = Generator[Request, Answer, Any]
"""A round of requests: yields each ``Request``, is sent its ``Answer``, returns its result."""


class ProtocolError(ValueError):
    """An answer this client does not read (chunked, malformed, or out of step)."""


def _request_bytes(host: bytes, req: Request) -> bytes:
    fields = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    head = f"POST {req.path} HTTP/1.1\r\n"
    tail = f"{fields}Content-Length: {len(req.body)}\r\n\r\n"
    return b"".join((head.encode(), host, tail.encode(), req.body))


def _decode(status: int, body: bytes) -> Answer:
    return status, json.loads(body) if body else {}


class _Reader:
    """One answer's bytes as they arrive: ``feed`` returns (status, body) once it is complete."""

    __slots__ = ("buffer", "close", "head")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.head: tuple[int, int, int | None] | None = None
        """(status, where the body starts, Content-Length or None: read to the close)."""
        self.close = False
        """The server ends the connection after this answer."""

    def feed(self, data: bytes) -> tuple[int, bytes] | None:
        buffer = self.buffer
        buffer += data
        if self.head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > 65536:
                    raise ProtocolError("an answer's head longer than 64 KiB")
                return None
            status, length, self.close = _parse_head(bytes(buffer[:end]))
            self.head = status, end + 4, length
        status, start, length = self.head
        if length is None or len(buffer) < start + length:
            return None
        if len(buffer) > start + length:
            raise ProtocolError("more bytes than the answer's Content-Length")
        return status, bytes(buffer[start:])

    def at_close(self) -> tuple[int, bytes] | None:
        """The answer when the server closed: complete if its body ran to the close."""
        if self.head is None or self.head[2] is not None:
            return None
        return self.head[0], bytes(self.buffer[self.head[1] :])


def _parse_head(head: bytes) -> tuple[int, int | None, bool]:
    """(status, Content-Length or None, close after) of an answer's head."""
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    if not version.startswith(b"HTTP/1.") or not rest[:3].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    length: int | None = None
    close = version == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            if not value.strip().isdigit():
                raise ProtocolError(f"Content-Length {value.strip()[:40]!r}")
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
        elif name == b"transfer-encoding":
            raise ProtocolError(f"Transfer-Encoding {value.strip()[:40]!r} (not expected)")
    return int(rest[:3]), length, close or length is None


def _targets(urls: Sequence[str]) -> tuple[list[tuple[str, int]], list[bytes]]:
    split = [urllib.parse.urlsplit(u) for u in urls]
    addrs = [(t.hostname or "127.0.0.1", t.port or 80) for t in split]
    return addrs, [f"Host: {t.netloc}\r\n".encode() for t in split]


# -- the event loop ---------------------------------------------------------------------------

SO_TIMESTAMPNS = 35
"""Linux: each ``recvmsg`` also returns when the kernel received the bytes (CLOCK_REALTIME), so an
answer handled at a later wake-up is still timed to its arrival."""
_STAMP = struct.Struct("qq")
_CMSG = socket.CMSG_SPACE(_STAMP.size)
_SWEEP = 0.1
"""Seconds between looks for requests past their timeout."""


@dataclass(slots=True, eq=False)
class _Flight:
    """A round in flight: its generator, the request on the wire and when the round began."""

    steps: Round
    which: int
    tag: Any
    data: bytes = b""
    retried: bool = False
    started: float = 0.0
    """perf_counter of the round's first send (0: not sent yet)."""
    deadline: float = 0.0
    """monotonic time by which the current request must be answered."""


@dataclass(slots=True, eq=False)
class _Conn:
    sock: socket.socket
    which: int
    reader: _Reader = field(default_factory=_Reader)
    flight: _Flight | None = None
    unsent: memoryview | None = None
    writing: bool = False
    """Registered for writability too (the request did not fit in one send)."""
    error: OSError | None = None
    """Why connecting failed at once (the request fails at the flush)."""
    closed: bool = False


Finished = tuple[Any, Any, str | None, float]
"""(tag, the round's result or None, the error that ended it or None, seconds from its first send
to the arrival of its last answer)."""


class Loop:
    """Rounds on kept-alive connections to ``urls`` (``which`` indexes them), one thread, one
    selector. ``tick`` > 0: wake up only every ``tick`` seconds (sends wait for the next tick; an
    answer is still timed to its arrival), so that several answers and sends share a wake-up."""

    def __init__(self, urls: Sequence[str], *, timeout: float = 30.0, tick: float = 0.0) -> None:
        self._addrs, self._hosts = _targets(urls)
        self._timeout, self._tick = timeout, tick
        self._selector = selectors.DefaultSelector()
        self._idle: list[list[_Conn]] = [[] for _ in urls]
        self._outbox: list[_Conn] = []
        self._finished: list[Finished] = []
        self._flights: dict[_Conn, _Flight] = {}
        self._next_sweep = 0.0
        self._stamps = sys.platform == "linux"

    @property
    def busy(self) -> int:
        """Rounds started and not finished."""
        return len(self._flights) + len(self._outbox)

    def start(self, which: int, steps: Round, tag: Any) -> None:
        """Begin a round against instance ``which``; its first request goes out with the next
        ``wait``."""
        self._advance(_Flight(steps, which, tag), None, 0.0)

    def wait(self, until: float | None) -> list[Finished]:
        """Send what is queued, then wait for answers (until the monotonic time ``until`` at
        most) and handle every one that has arrived; the rounds that finished. With nothing in
        flight and no ``until`` it returns at once."""
        self._flush()
        if not self.busy and until is None:
            finished, self._finished = self._finished, []
            return finished
        now = time.monotonic()
        if self._outbox:  # retries the flush queued: round again at once
            events = self._selector.select(0)
        elif self._tick:  # the next tick while busy, else the first tick from ``until`` on
            tick = self._tick
            if self._flights:
                wake = (math.floor(now / tick) + 1) * tick
            else:
                assert until is not None
                wake = math.ceil(until / tick) * tick
            if wake > now:
                time.sleep(wake - now)
            events = self._selector.select(0)
        else:
            wake = until if until is not None else math.inf
            if self._flights:
                wake = min(wake, now + _SWEEP)
            events = self._selector.select(max(0.0, wake - now))
        offset = time.time() - time.perf_counter()
        for key, mask in events:
            conn: _Conn = key.data
            if mask & selectors.EVENT_WRITE and conn.unsent and not conn.closed:
                self._send(conn)
            if mask & selectors.EVENT_READ and not conn.closed:
                if conn.flight is None:
                    self._drop(conn)  # an idle connection the server closed
                else:
                    self._readable(conn, offset)
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP
            self._sweep(now)
        finished, self._finished = self._finished, []
        return finished

    def close(self) -> None:
        for conn in [*self._flights, *self._outbox, *(c for idle in self._idle for c in idle)]:
            self._drop(conn)
        self._selector.close()

    # -- rounds ------------------------------------------------------------------------------

    def _advance(self, flight: _Flight, answer: Answer | None, arrived: float) -> None:
        """Run the round to its next request (queued on a connection) or to its end."""
        try:
            req = next(flight.steps) if answer is None else flight.steps.send(answer)
        except StopIteration as stop:
            self._finish(flight, stop.value, None, arrived)
            return
        flight.data = _request_bytes(self._hosts[flight.which], req)
        flight.retried = False
        self._queue(flight)

    def _finish(self, flight: _Flight, result: Any, error: str | None, arrived: float) -> None:
        seconds = max(0.0, arrived - flight.started) if flight.started else 0.0
        self._finished.append((flight.tag, result, error, seconds))

    def _fail(self, conn: _Conn, exc: BaseException, *, retry: bool = True) -> None:
        """The request on ``conn`` failed: once more on a new connection, or the round ends."""
        flight = conn.flight
        self._drop(conn)
        if flight is None:
            return
        if retry and not flight.retried:
            flight.retried = True
            self._queue(flight)
            return
        flight.steps.close()
        self._finish(flight, None, type(exc).__name__, time.perf_counter())

    # -- connections -------------------------------------------------------------------------

    def _queue(self, flight: _Flight) -> None:
        idle = self._idle[flight.which]
        conn = idle.pop() if idle else self._connect(flight.which)
        conn.flight = flight
        self._outbox.append(conn)

    def _connect(self, which: int) -> _Conn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._stamps:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        conn = _Conn(sock, which)
        err = sock.connect_ex(self._addrs[which])
        if err not in (0, errno.EINPROGRESS):
            conn.error = OSError(err, errno.errorcode.get(err, "connect"))
        self._selector.register(sock, selectors.EVENT_READ, conn)
        return conn

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        now, started = time.monotonic(), time.perf_counter()
        for conn in outbox:
            flight = conn.flight
            assert flight is not None
            flight.deadline = now + self._timeout
            if not flight.started:
                flight.started = started
            conn.reader = _Reader()
            conn.unsent = memoryview(flight.data)
            self._flights[conn] = flight
            if conn.error is not None:
                self._fail(conn, conn.error)
            else:
                self._send(conn)

    def _send(self, conn: _Conn) -> None:
        """Send what is left of the request (a connect still in progress, or a full socket
        buffer: the rest when the socket turns writable; a failed connect raises here)."""
        assert conn.unsent is not None
        try:
            n = conn.sock.send(conn.unsent)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._fail(conn, exc)
            return
        conn.unsent = conn.unsent[n:]
        if conn.unsent:
            if not conn.writing:
                conn.writing = True
                self._selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
            return
        conn.unsent = None
        if conn.writing:
            conn.writing = False
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _readable(self, conn: _Conn, offset: float) -> None:
        try:
            data, ancdata, _, _ = conn.sock.recvmsg(65536, _CMSG)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(conn, exc)
            return
        arrived = time.perf_counter()
        for level, kind, stamp in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = _STAMP.unpack_from(stamp)
                arrived = min(arrived, sec + nsec * 1e-9 - offset)
        try:
            got = conn.reader.feed(data) if data else conn.reader.at_close()
            if got is None:
                if not data:
                    raise ConnectionResetError("the connection closed before a complete answer")
                return
            answer = _decode(*got)
        except (OSError, ValueError) as exc:
            self._fail(conn, exc)
            return
        flight = conn.flight
        assert flight is not None
        self._flights.pop(conn, None)
        conn.flight = None
        if conn.reader.close or not data:
            self._drop(conn)
        else:
            self._idle[conn.which].append(conn)
        self._advance(flight, answer, arrived)

    def _sweep(self, now: float) -> None:
        late = [c for c, f in self._flights.items() if f.deadline <= now]
        for conn in late:
            self._fail(conn, TimeoutError("no answer within the timeout"), retry=False)

    def _drop(self, conn: _Conn) -> None:
        conn.closed, conn.flight = True, None
        self._flights.pop(conn, None)
        if conn in self._outbox:
            self._outbox.remove(conn)
        idle = self._idle[conn.which]
        if conn in idle:
            idle.remove(conn)
        with contextlib.suppress(KeyError, ValueError):  # never registered, or closed already
            self._selector.unregister(conn.sock)
        conn.sock.close()


# -- the same, blocking, for threads -----------------------------------------------------------


class Client:
    """The loop's protocol for one thread: a kept-alive connection per instance, one blocking
    ``post`` at a time (the whole request bounded by ``timeout``)."""

    def __init__(self, urls: Sequence[str], timeout: float = 30.0) -> None:
        self._addrs, self._hosts = _targets(urls)
        self._socks: dict[int, socket.socket] = {}
        self.timeout = timeout

    def post(self, which: int, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """(status, decoded JSON); a dropped or refused connection or an unreadable answer is
        retried once on a new connection, then the error is the caller's; a timeout at once."""
        data = _request_bytes(self._hosts[which], Request(path, body, headers))
        for attempt in (0, 1):
            deadline = time.monotonic() + self.timeout
            try:
                return _decode(*self._exchange(which, data, deadline))
            except TimeoutError:
                self._drop(which)
                raise
            except (OSError, ValueError):
                self._drop(which)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _exchange(self, which: int, data: bytes, deadline: float) -> tuple[int, bytes]:
        sock = self._socks.get(which)
        if sock is None:
            sock = socket.create_connection(self._addrs[which], timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks[which] = sock
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(data)
        reader = _Reader()
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            got = reader.feed(chunk) if chunk else reader.at_close()
            if got is not None:
                if reader.close or not chunk:
                    self._drop(which)
                return got
            if not chunk:
                raise ConnectionResetError("the connection closed before a complete answer")

    def _drop(self, which: int) -> None:
        sock = self._socks.pop(which, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for which in list(self._socks):
            self._drop(which)
