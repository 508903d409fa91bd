"""The fleet simulator's HTTP/1.1 client (testkit/loadhttp.py) against scripted servers: kept-alive
connections, ``Connection: close``, dropped connections retried once, a bounded wait on a
frozen server, and answers it refuses to guess at."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from testkit.loadhttp import Client, Loop, ProtocolError, Request, Round, _parse_head

JSON = {"Content-Type": "application/json"}
Reply = Callable[[int, bytes], object]


def _answer(body: bytes, *, status: str = "200 OK", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Scripted:
    """A server on a free port whose ``reply(n, request)`` says what the n-th request gets:
    bytes to send (then keep the connection), ``(bytes, True)`` to send and close, or None to
    close without answering; ``"hang"`` never answers."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(data) < length:
                    data += conn.recv(65536)
                request, data = head + b"\r\n\r\n" + data[:length], data[length:]
                self.requests.append(request)
                out = self.reply(len(self.requests), request)
                if out == "hang":
                    self.stop.wait(30)
                    return
                if out is None:
                    return
                close = isinstance(out, tuple)
                conn.sendall(out[0] if isinstance(out, tuple) else out)
                if close:
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


Make = Callable[[Reply], Scripted]


@pytest.fixture
def scripted() -> Iterator[Make]:
    made: list[Scripted] = []

    def make(reply: Reply) -> Scripted:
        made.append(Scripted(reply))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_requests_share_one_kept_alive_connection_and_carry_their_length(scripted: Make) -> None:
    server = scripted(lambda n, req: _answer(b'{"n": %d}' % n))
    client = Client([server.url], timeout=5)
    assert client.post(0, "/v1/a", b"{}", JSON) == (200, {"n": 1})
    assert client.post(0, "/v1/b", b'{"x": 1}', JSON) == (200, {"n": 2})
    client.close()
    assert server.connections == 1
    head = server.requests[1].split(b"\r\n")
    assert head[0] == b"POST /v1/b HTTP/1.1"
    assert b"Content-Length: 8" in head and b"Content-Type: application/json" in head
    assert server.requests[1].endswith(b'\r\n\r\n{"x": 1}')


def test_connection_close_answer_is_read_and_the_next_request_reconnects(scripted: Make) -> None:
    server = scripted(
        lambda n, req: (_answer(b'{"n": %d}' % n, extra="Connection: close\r\n"), True)
    )
    client = Client([server.url], timeout=5)
    assert client.post(0, "/", b"", JSON) == (200, {"n": 1})
    assert client.post(0, "/", b"", JSON) == (200, {"n": 2})
    client.close()
    assert server.connections == 2


def test_an_answer_without_length_is_read_until_the_close(scripted: Make) -> None:
    server = scripted(
        lambda n, req: (b'HTTP/1.1 503 SERVICE UNAVAILABLE\r\n\r\n{"error": {}}', True)
    )
    client = Client([server.url], timeout=5)
    assert client.post(0, "/", b"", JSON) == (503, {"error": {}})
    client.close()


def test_a_dropped_connection_is_retried_once_on_a_new_one(scripted: Make) -> None:
    server = scripted(lambda n, req: None if n == 1 else _answer(b"{}", status="201 CREATED"))
    client = Client([server.url], timeout=5)
    assert client.post(0, "/", b"", JSON) == (201, {})
    client.close()
    assert (len(server.requests), server.connections) == (2, 2)


def test_a_connection_dropped_twice_is_the_callers_error(scripted: Make) -> None:
    server = scripted(lambda n, req: None)
    client = Client([server.url], timeout=5)
    with pytest.raises(ConnectionError):
        client.post(0, "/", b"", JSON)
    client.close()
    assert len(server.requests) == 2


def test_a_server_that_closed_an_idle_connection_costs_no_retry(scripted: Make) -> None:
    server = scripted(lambda n, req: (_answer(b"{}"), True) if n == 1 else _answer(b"{}"))
    loop = Loop([server.url], timeout=5)
    assert _run(loop, [_posts(1)]) == [((200, {}),)]
    time.sleep(0.2)  # the close arrives while the connection is idle
    assert _run(loop, [_posts(1)]) == [((200, {}),)]
    loop.close()
    assert (len(server.requests), server.connections) == (2, 2)


def test_a_frozen_server_fails_the_request_after_the_timeout_without_a_retry(
    scripted: Make,
) -> None:
    server = scripted(lambda n, req: "hang")
    client = Client([server.url], timeout=0.5)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        client.post(0, "/", b"", JSON)
    assert 0.5 <= time.monotonic() - start < 1.5
    client.close()
    assert len(server.requests) == 1


def test_a_refused_connection_is_an_oserror() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    client = Client([f"http://127.0.0.1:{port}"], timeout=2)
    with pytest.raises(ConnectionRefusedError):
        client.post(0, "/", b"", JSON)
    client.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        _answer(b"not json"),
    ],
    ids=["chunked", "not-http", "not-json"],
)
def test_answers_it_does_not_read_are_value_errors(scripted: Make, answer: bytes) -> None:
    server = scripted(lambda n, req: answer)
    client = Client([server.url], timeout=2)
    with pytest.raises(ValueError):
        client.post(0, "/", b"", JSON)
    client.close()
    assert len(server.requests) == 2  # retried once on a new connection, then the caller's


def test_the_head_parser_reads_status_length_and_close() -> None:
    head = b"HTTP/1.1 422 UNPROCESSABLE ENTITY\r\nconnection: Close\r\nContent-Length:  68"
    assert _parse_head(head) == (422, 68, True)
    assert _parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 2") == (200, 2, True)
    assert _parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2") == (200, 2, False)
    assert _parse_head(b"HTTP/1.1 200 OK") == (200, None, True)  # read to the close
    with pytest.raises(ProtocolError):
        _parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -2")


def _posts(n: int, path: str = "/v1/x") -> Round:
    """A round of ``n`` requests; its result: their answers."""
    answers = []
    for i in range(n):
        answers.append((yield Request(f"{path}/{i}", b"{}", JSON)))
    return tuple(answers)


def _run(loop: Loop, rounds: list[Round], which: int = 0) -> list[object]:
    """Run ``rounds`` to their ends; their results in order (or the error's name)."""
    for i, steps in enumerate(rounds):
        loop.start(which, steps, i)
    done: dict[int, object] = {}
    deadline = time.monotonic() + 10
    while loop.busy and time.monotonic() < deadline:
        for tag, result, error, seconds in loop.wait(None):
            assert seconds >= 0
            done[tag] = error or result
    return [done[i] for i in range(len(rounds))]


@pytest.mark.parametrize("tick", [0.0, 0.01])
def test_the_loop_runs_rounds_side_by_side_on_kept_alive_connections(
    scripted: Make, tick: float
) -> None:
    server = scripted(lambda n, req: _answer(b'{"path": "%s"}' % req.split(b" ")[1]))
    loop = Loop([server.url], timeout=5, tick=tick)
    got = _run(loop, [_posts(3, f"/r{i}") for i in range(4)])
    assert got == [tuple((200, {"path": f"/r{i}/{j}"}) for j in range(3)) for i in range(4)]
    assert _run(loop, [_posts(1)]) == [((200, {"path": "/v1/x/0"}),)]
    loop.close()
    assert server.connections == 4  # one per round in flight, kept for the next


def test_the_loop_times_an_answer_to_its_arrival_not_to_the_next_tick(scripted: Make) -> None:
    server = scripted(lambda n, req: _answer(b"{}"))
    loop = Loop([server.url], timeout=5, tick=0.2)
    loop.start(0, _posts(1), "a")
    finished = []
    while loop.busy:
        finished += loop.wait(None)
    loop.close()
    [(tag, result, error, seconds)] = finished
    assert (tag, result, error) == ("a", ((200, {}),), None)
    assert seconds < 0.1  # answered at once; handled at the tick 0.2 s later


def test_the_loop_retries_a_dropped_connection_once_then_names_the_error(scripted: Make) -> None:
    server = scripted(lambda n, req: None if n in (1, 3, 4) else _answer(b"{}"))
    loop = Loop([server.url], timeout=5)
    assert _run(loop, [_posts(1)]) == [((200, {}),)]  # dropped once, then answered
    assert _run(loop, [_posts(1)]) == ["ConnectionResetError"]  # dropped twice
    loop.close()
    assert len(server.requests) == 4


def test_the_loop_gives_up_on_a_frozen_server_after_the_timeout(scripted: Make) -> None:
    server = scripted(lambda n, req: "hang")
    loop = Loop([server.url], timeout=0.5)
    start = time.monotonic()
    assert _run(loop, [_posts(1), _posts(1)]) == ["TimeoutError", "TimeoutError"]
    assert 0.5 <= time.monotonic() - start < 1.5
    loop.close()
    assert len(server.requests) == 2  # not retried


def test_the_loop_names_a_refused_connection_after_one_retry() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = Loop([f"http://127.0.0.1:{port}"], timeout=2)
    assert _run(loop, [_posts(1)]) == ["ConnectionRefusedError"]
    loop.close()


def test_the_loop_sends_a_body_larger_than_the_socket_buffer(scripted: Make) -> None:
    server = scripted(lambda n, req: _answer(b'{"got": %d}' % len(req)))
    loop = Loop([server.url], timeout=5)

    def big() -> Round:
        return (yield Request("/big", b"x" * 3_000_000, JSON))

    [(status, body)] = _run(loop, [big()])  # type: ignore[misc]
    loop.close()
    assert status == 200 and body["got"] > 3_000_000
