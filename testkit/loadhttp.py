"""A minimal HTTP/1.1 client on asyncio for the fleet simulator (scaffolding: LOAD GENERATION ONLY).

The fleet simulator shares two cores with the verifier it measures, so every microsecond it spends
per request is taken from the server. ``http.client`` on 64 threads cost 0.3–0.7 ms of CPU per
attestation, most of it in thread switches, the GIL and ``http.client``'s header machinery; one
event loop writing each request in one ``send`` and parsing each answer from the bytes it arrived
in costs a fraction of that.

What it speaks is what our gunicorn verifier speaks: ``POST`` with ``Content-Length`` on kept-alive
connections; answers with ``Content-Length`` (every verifier answer has one), or read to the close
without it. ``Connection: close`` (and HTTP/1.0) ends the connection after the answer; a chunked
answer is refused (``ProtocolError``: the verifier never sends one, and guessing would hide it).
A connection the server dropped (its keep-alive timeout, a killed worker) is retried once on a new
one; a request that is not answered within ``timeout`` seconds (connecting, sending and reading
together) fails with ``TimeoutError`` and is not retried (the instance is frozen or overloaded).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

Answer = tuple[int, Any]
"""(status, decoded JSON body; ``{}`` for an empty body)."""


class ProtocolError(ValueError):
    """An answer this client does not read (chunked, malformed, or more than was asked for)."""


class _Connection(asyncio.Protocol):
    """One kept-alive connection: one request at a time, its answer parsed as the bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.open = True
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._head: tuple[int, int, int | None, bool] | None = None
        """The answer's head once read: (status, where the body starts, its length, close after)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            self._answer(waiter)
        except ProtocolError as exc:
            waiter.set_exception(exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        waiter, head = self._waiter, self._head
        if waiter is None or waiter.done():
            return
        if head is not None and head[2] is None:  # the body was "everything until the close"
            waiter.set_result((head[0], bytes(self._buffer[head[1] :])))
            return
        lost = ConnectionResetError("the connection closed before a complete answer")
        waiter.set_exception(lost)

    async def request(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        """Send ``data`` (a whole request) and wait for the answer: (status, body)."""
        assert self.transport is not None and self._waiter is None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(timeout, self._time_out, waiter)
        self.transport.write(data)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter, self._head = None, None

    def _time_out(self, waiter: asyncio.Future[tuple[int, bytes]]) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError("no answer within the timeout"))
        if self.transport is not None:
            self.transport.abort()
        self.open = False

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()

    def _answer(self, waiter: asyncio.Future[tuple[int, bytes]]) -> None:
        buffer = self._buffer
        head = self._head
        if head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > 65536:
                    raise ProtocolError("an answer's head longer than 64 KiB")
                return
            head = self._head = _parse_head(bytes(buffer[:end]), end + 4)
        status, start, length, close = head
        if length is None or len(buffer) < start + length:
            return
        if len(buffer) > start + length:
            raise ProtocolError("more bytes than the answer's Content-Length")
        waiter.set_result((status, bytes(buffer[start:])))
        buffer.clear()
        if close:
            self.close()


def _parse_head(head: bytes, start: int) -> tuple[int, int, int | None, bool]:
    """(status, body start, Content-Length or None, close after) of an answer's head."""
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
    if length is None:
        close = True  # read until the server closes
    return int(rest[:3]), start, length, close


class AsyncClient:
    """Kept-alive connections, one per verifier instance (``which`` indexes ``urls``), used by one
    task at a time."""

    def __init__(self, urls: Sequence[str], timeout: float = 30.0) -> None:
        targets = [urllib.parse.urlsplit(u) for u in urls]
        self._targets = [(t.hostname or "127.0.0.1", t.port or 80) for t in targets]
        self._hosts = [f"Host: {t.netloc}\r\n".encode() for t in targets]
        self._conns: dict[int, _Connection] = {}
        self.timeout = timeout

    async def post(self, which: int, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """(status, decoded JSON); a dropped connection is retried once on a new one, then the
        OSError is the caller's (the instance is down); a timeout is the caller's at once."""
        fields = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        data = b"".join(
            (
                f"POST {path} HTTP/1.1\r\n".encode(),
                self._hosts[which],
                f"{fields}Content-Length: {len(body)}\r\n\r\n".encode(),
                body,
            )
        )
        for attempt in (0, 1):
            conn = self._conns.get(which)
            try:
                if conn is None or not conn.open:
                    conn = self._conns[which] = await self._connect(which)
                status, answer = await conn.request(data, self.timeout)
                return status, json.loads(answer) if answer else {}
            except TimeoutError:
                self._drop(which)
                raise
            except (OSError, ValueError):  # ProtocolError and undecodable JSON are ValueErrors
                self._drop(which)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _connect(self, which: int) -> _Connection:
        host, port = self._targets[which]
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(_Connection, host, port), self.timeout
        )
        return conn

    def _drop(self, which: int) -> None:
        conn = self._conns.pop(which, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for which in list(self._conns):
            self._drop(which)


class Client:
    """``AsyncClient`` for a thread: its own event loop, one blocking ``post`` at a time."""

    def __init__(self, urls: Sequence[str], timeout: float = 30.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = AsyncClient(urls, timeout)

    def post(self, which: int, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """``AsyncClient.post``, blocking."""
        return self._loop.run_until_complete(self._client.post(which, path, body, headers))

    def close(self) -> None:
        self._client.close()
        self._loop.run_until_complete(asyncio.sleep(0))  # let the transports close
        self._loop.close()
