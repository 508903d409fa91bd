"""The agent authenticates the verifier: a real gunicorn verifier over TLS with a certificate from a
test CA, reached with the right CA, the wrong one, the wrong host name, a pin, a wrong pin; plain
HTTP only to loopback unless explicitly allowed."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.client import VerifierClient
from agent.errors import EXIT_USAGE, EXIT_VERIFIER_UNREACHABLE, VerifierUnreachable
from assay.errors import ConfigurationError
from testkit import tls
from testkit.service import run_server
from verifier.service import ServiceConfig
from verifier.store import Store, upgrade

from .conftest import CORPUS

LOG = CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin"


@dataclass(frozen=True)
class Tls:
    url: str
    port: int
    ca: tls.TestCa
    other_ca: tls.TestCa
    cert: tls.ServerCert


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    base = tmp_path_factory.mktemp("tls")
    ca = tls.make_ca(base / "ca")
    other = tls.make_ca(base / "other-ca", "Someone else's CA")
    cert = tls.issue(ca, base / "server", ("127.0.0.1",))  # an IP SAN only: "localhost" mismatches
    db = str(base / "v.db")
    upgrade(Store(db))
    config = ServiceConfig(database=db, tls_cert=str(cert.cert_path), tls_key=str(cert.key_path))
    with run_server(config, tls_ca=ca.cert_path) as url:
        yield Tls(url, int(url.rsplit(":", 1)[1]), ca, other, cert)


def _nonce(client: VerifierClient) -> bytes:
    return client.challenge("tls-node").nonce


def test_agent_trusts_a_verifier_certificate_issued_by_its_ca(verifier: Tls) -> None:
    client = VerifierClient(verifier.url, tls_ca=str(verifier.ca.cert_path))
    assert len(_nonce(client)) == 32


def test_agent_refuses_a_verifier_certificate_from_another_ca(verifier: Tls) -> None:
    client = VerifierClient(verifier.url, tls_ca=str(verifier.other_ca.cert_path))
    with pytest.raises(VerifierUnreachable, match="TLS certificate is not trusted"):
        _nonce(client)


def test_agent_refuses_the_system_cas_for_a_private_ca_certificate(verifier: Tls) -> None:
    with pytest.raises(VerifierUnreachable, match="not trusted"):
        _nonce(VerifierClient(verifier.url))


def test_agent_refuses_a_certificate_for_another_host_name(verifier: Tls) -> None:
    client = VerifierClient(f"https://localhost:{verifier.port}", tls_ca=str(verifier.ca.cert_path))
    with pytest.raises(VerifierUnreachable, match=r"[Hh]ostname mismatch"):
        _nonce(client)


def test_agent_accepts_the_pinned_certificate_without_any_ca(verifier: Tls) -> None:
    pin = ":".join(f"{b:02X}" for b in bytes.fromhex(verifier.cert.sha256))  # openssl's form
    assert len(_nonce(VerifierClient(verifier.url, tls_pin=pin))) == 32


def test_agent_refuses_a_certificate_that_is_not_the_pinned_one(verifier: Tls) -> None:
    client = VerifierClient(verifier.url, tls_pin="sha256:" + "00" * 32)
    with pytest.raises(VerifierUnreachable, match="is not the pinned one"):
        _nonce(client)


def test_pin_and_ca_must_both_hold_when_both_are_given(verifier: Tls) -> None:
    pin = verifier.cert.sha256
    assert _nonce(VerifierClient(verifier.url, tls_ca=str(verifier.ca.cert_path), tls_pin=pin))
    with pytest.raises(VerifierUnreachable, match="not trusted"):
        _nonce(VerifierClient(verifier.url, tls_ca=str(verifier.other_ca.cert_path), tls_pin=pin))


def _tls_listener(cert: tls.ServerCert, received: list[bytes]) -> tuple[int, threading.Thread]:
    """One TLS connection accepted; records what the client sent after the handshake."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert_path, cert.key_path)
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with server, context.wrap_socket(server.accept()[0], server_side=True) as conn:
            conn.settimeout(5)
            try:
                received.append(conn.recv(65536))
            except (OSError, ssl.SSLError):
                received.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return int(server.getsockname()[1]), thread


@pytest.mark.parametrize("right_pin", [True, False])
def test_a_wrong_pin_is_refused_before_the_request_is_sent(verifier: Tls, right_pin: bool) -> None:
    received: list[bytes] = []
    port, thread = _tls_listener(verifier.cert, received)
    pin = verifier.cert.sha256 if right_pin else "ab" * 32
    client = VerifierClient(f"https://127.0.0.1:{port}", tls_pin=pin, timeout=5)
    with pytest.raises(VerifierUnreachable):
        _nonce(client)  # the listener never answers
    thread.join(10)
    assert received[0].startswith(b"POST /v1/nodes/tls-node/challenge") is right_pin
    if not right_pin:
        assert received == [b""]


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:8700", "http://verifier.example", "http://127.0.0.1.example"]
)
def test_plain_http_to_a_host_that_is_not_loopback_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="not loopback"):
        VerifierClient(url)
    VerifierClient(url, allow_insecure_http=True)  # explicitly allowed (nothing is sent here)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8700", "http://127.8.9.10", "http://localhost:1", "http://[::1]:8"]
)
def test_plain_http_to_loopback_is_accepted(url: str) -> None:
    VerifierClient(url)


def test_tls_settings_with_a_plain_http_url_are_refused(verifier: Tls) -> None:
    with pytest.raises(ConfigurationError, match="use https"):
        VerifierClient("http://127.0.0.1:1", tls_ca=str(verifier.ca.cert_path))
    with pytest.raises(ConfigurationError, match="tls_pin"):
        VerifierClient(verifier.url, tls_pin="not hex")


def _agent(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "attest", "--eventlog", str(LOG), "--node", "n1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def test_agent_cli_with_the_wrong_ca_fails_with_one_line_and_exit_6(verifier: Tls) -> None:
    done = _agent(
        "--verifier",
        verifier.url,
        env={"ASSAY_AGENT_TLS_CA": str(verifier.other_ca.cert_path), "PYTHONPATH": "."},
    )
    assert done.returncode == EXIT_VERIFIER_UNREACHABLE, done.stderr
    assert done.stderr.count("\n") == 1 and "TLS certificate is not trusted" in done.stderr


def test_agent_cli_refuses_plain_http_to_another_host_unless_allowed(tmp_path: Path) -> None:
    done = _agent("--verifier", "http://192.0.2.1:8700", env={"PYTHONPATH": "."})
    assert done.returncode == EXIT_USAGE and "not loopback" in done.stderr
    assert done.stderr.count("\n") == 1
