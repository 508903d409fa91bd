"""Slow and idle clients cannot stall the service: a real gunicorn, started like production.

300 sockets to 127.0.0.1 only (a third idle, a third stuck in their headers, a third trickling a
body), bounded in count and time; meanwhile ``/healthz`` must answer promptly on a fresh
connection, and the server must drop the stuck ones by itself. With the former sync workers two
idle sockets were enough to block both workers.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from testkit.service import run_server
from verifier.service import ServiceConfig
from verifier.service.server import KEEPALIVE
from verifier.store import Store, upgrade

SLOW_SOCKETS = 300
HEALTH_PROBES = 20


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    db = str(tmp_path / "slow.db")
    store = Store(db)
    upgrade(store)
    store.close()
    with run_server(ServiceConfig(database=db, workers=2)) as served:
        yield served


def _open(port: int, first: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if first:
        s.sendall(first)
    return s


def _closed_by_server(s: socket.socket) -> bool:
    """True when the server has closed (or answered and closed) the connection."""
    s.settimeout(0.01)
    try:
        data = s.recv(4096)
    except TimeoutError:
        return False
    except OSError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 4")


def _healthz_latencies(url: str) -> list[float]:
    out = []
    for _ in range(HEALTH_PROBES):
        started = time.perf_counter()
        resp = requests.get(f"{url}/healthz", timeout=5, headers={"Connection": "close"})
        out.append(time.perf_counter() - started)
        assert resp.status_code == 200 and resp.json() == {"ok": True}
    return out


def test_healthz_answers_promptly_beside_300_idle_and_slow_sockets(url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    partial = b"POST /v1/nodes/n1/evidence HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    body_head = (
        b"POST /v1/nodes/n1/evidence HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/cbor\r\nContent-Length: 100000\r\n\r\n\xa1"
    )
    kinds = [b"", partial, body_head]
    sockets = [_open(port, kinds[i % 3]) for i in range(SLOW_SOCKETS)]
    try:
        time.sleep(0.5)  # let both workers accept their share
        latencies = _healthz_latencies(url)
        for s in sockets[2::3]:  # the body tricklers send a little more
            s.sendall(b"\x00")
        latencies += _healthz_latencies(url)
        print(
            f"\n/healthz beside {SLOW_SOCKETS} slow sockets: "
            f"p50 {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
        )
        assert max(latencies) < 1.0
        # Stuck headers and idle connections are dropped after the keepalive/header deadline.
        deadline = time.monotonic() + KEEPALIVE + 5
        stuck = [s for i, s in enumerate(sockets) if i % 3 in (0, 1)]
        while time.monotonic() < deadline and not all(_closed_by_server(s) for s in stuck):
            time.sleep(0.5)
        still_open = sum(not _closed_by_server(s) for s in stuck)
        assert still_open == 0, f"{still_open} idle/stuck sockets still open"
        assert _healthz_latencies(url)[-1] < 1.0
    finally:
        for s in sockets:
            s.close()
