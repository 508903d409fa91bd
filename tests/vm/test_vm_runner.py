"""The runner's QMP wait, without QEMU: a real UNIX socket bound before it listens (as QEMU does
it), and a real child process standing in for QEMU's lifetime. Not marked vm: no VM boots."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from .runner import VmBootError, VmNode


def _node(tmp_path: Path) -> Any:
    node: Any = VmNode.__new__(VmNode)  # only what the wait reads: its dir and variant name
    node.dir = tmp_path
    node.image = SimpleNamespace(variant=SimpleNamespace(name="stand-in"))
    (tmp_path / "qemu.out").write_text("qemu said this\n")
    return node


def _late_listener(path: Path, delay: float, seen: list[bytes]) -> threading.Thread:
    """Binds ``path`` now and listens only after ``delay``, then answers as QMP does."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))

    def serve() -> None:
        time.sleep(delay)
        server.listen(1)
        conn, _ = server.accept()
        with conn, server:
            seen.append(conn.recv(1024))
            conn.sendall(b'{"return": {}}\n{"event": "SHUTDOWN", "data": {}}\n')
            time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_a_socket_bound_before_it_listens_is_connected_once_it_listens(tmp_path: Path) -> None:
    qmp = tmp_path / "qmp.sock"
    seen: list[bytes] = []
    thread = _late_listener(qmp, 0.5, seen)
    # Refused before listen(): the connect the runner used to make once, and fail on.
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe,
        pytest.raises(ConnectionRefusedError),
    ):
        probe.connect(str(qmp))
    qemu = subprocess.Popen(["sleep", "30"])
    try:
        _node(tmp_path)._wait_shutdown(qemu, qmp, time.monotonic() + 20)
    finally:
        qemu.kill()
        qemu.wait()
    thread.join(5)
    assert seen == [b'{"execute": "qmp_capabilities"}\n']


def test_qemu_that_exits_before_listening_is_named_with_its_exit_status(tmp_path: Path) -> None:
    qmp = tmp_path / "qmp.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(str(qmp))  # never listens
        qemu = subprocess.Popen(["sh", "-c", "exit 3"])
        qemu.wait()
        with pytest.raises(VmBootError) as err:
            _node(tmp_path)._wait_shutdown(qemu, qmp, time.monotonic() + 20)
    assert "stand-in: QEMU exited (3) before its QMP socket took a connection" in str(err.value)
    assert "qemu said this" in str(err.value)


def test_a_socket_that_never_listens_times_out_at_the_deadline(tmp_path: Path) -> None:
    qmp = tmp_path / "qmp.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(str(qmp))
        qemu = subprocess.Popen(["sleep", "30"])
        try:
            with pytest.raises(VmBootError, match="QEMU timed out before its QMP socket"):
                _node(tmp_path)._wait_shutdown(qemu, qmp, time.monotonic() + 0.5)
        finally:
            qemu.kill()
            qemu.wait()
