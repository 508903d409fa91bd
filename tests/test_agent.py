"""The agent's protocol side: CLI exit codes, config precedence, the evidence bundle, run loop.

The TPM is always a real swtpm. The verifier here is ``FakeVerifier``, a tiny in-test Flask app
used ONLY for protocol-shape tests (requests, bundle, retries); it does real MakeCredential and
real quote verification with assay.tpm2 so a wrong agent cannot pass. End-to-end tests against
the real verifier service belong to the service's test suite.
"""

from __future__ import annotations

import base64
import errno
import itertools
import os
import random
import secrets
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import pytest
from flask import Flask, Response, jsonify, request
from tpm2_pytss import TPM2_CAP, TPM2_HR, PyTCTI, TCTILdr, TSS2_Exception
from werkzeug.serving import make_server

from agent import __version__
from agent._cli import main as cli
from agent.client import VerifierClient
from agent.config import AgentConfig, load_config, parse_pcr_selection
from agent.errors import (
    EXIT_EVENTLOG_UNREADABLE,
    EXIT_NO_TPM,
    EXIT_OK,
    EXIT_TPM_BUSY,
    EXIT_TPM_ERROR,
    EXIT_UNTRUSTED,
    EXIT_VERIFIER_REFUSED,
    EXIT_VERIFIER_UNREACHABLE,
    TpmBusy,
)
from agent.node import next_delay, run
from agent.state import AkContextFile
from agent.tpm import TctiSpec, Tpm, _rc_error
from assay.algorithms import HashAlg
from assay.errors import ConfigurationError
from assay.tpm2 import TpmPublic, make_credential, parse_public, verify_quote
from testkit import swtpm
from testkit.bootsim import simulate_boot

pytestmark = pytest.mark.swtpm

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "eventlogs"
LOG = CORPUS / "python3-uefi-eventlog" / "rhcos.bin"
TOKEN = "enroll-token-1"


@dataclass
class FakeVerifier:
    """In-test fake of the verifier's agent API, for protocol-shape tests only."""

    url: str = ""
    enrolled: dict[str, TpmPublic] = field(default_factory=dict)
    pending: dict[str, tuple[str, TpmPublic, bytes, str]] = field(default_factory=dict)
    nonces: dict[str, bytes] = field(default_factory=dict)
    bundles: list[dict[str, Any]] = field(default_factory=list)
    user_agents: set[str] = field(default_factory=set)
    known_log: bytes | None = None
    fail_challenges: int = 0
    status: str = "trusted"
    calls: list[str] = field(default_factory=list)

    def app(self) -> Flask:
        app = Flask("fake-verifier")

        def error(code: str, status: int) -> tuple[Response, int]:
            return jsonify({"error": {"code": code, "message": code.replace("_", " ")}}), status

        @app.before_request
        def seen() -> None:
            self.user_agents.add(request.headers.get("User-Agent", ""))
            self.calls.append(request.path)

        @app.post("/v1/enrollments")
        def enroll() -> tuple[Response, int]:
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                return error("bad_enroll_token", 403)
            body = request.get_json()
            ek = parse_public(base64.b64decode(body["ek_public"]))
            ak = parse_public(base64.b64decode(body["ak_public"]))
            secret = secrets.token_bytes(32)
            blob, enc = make_credential(ek, ak.name, secret)
            eid, key = secrets.token_hex(8), secrets.token_urlsafe(32)
            self.pending[eid] = (body["node"], ak, secret, key)
            return jsonify({
                "enrollment_id": eid,
                "activation_key": key,
                "credential_blob": base64.b64encode(blob).decode(),
                "encrypted_secret": base64.b64encode(enc).decode(),
                "expires_at": "2026-11-28T13:00:00Z",
            }), 201  # fmt: skip

        @app.post("/v1/enrollments/<eid>/activation")
        def activate(eid: str) -> tuple[Response, int]:
            node, ak, secret, key = self.pending.pop(eid)
            if request.get_json().get("activation_key") != key:
                return error("activation_key_invalid", 403)
            if base64.b64decode(request.get_json()["secret"]) != secret:
                return error("activation_failed", 403)
            self.enrolled[node] = ak
            return jsonify({"node": node, "state": "enrolled"}), 200

        @app.post("/v1/nodes/<node>/challenge")
        def challenge(node: str) -> tuple[Response, int]:
            if self.fail_challenges > 0:
                self.fail_challenges -= 1
                return error("overloaded", 503)
            if node not in self.enrolled:
                return error("node_not_enrolled", 404)
            self.nonces[node] = secrets.token_bytes(32)
            return jsonify({
                "nonce": self.nonces[node].hex(),
                "expires_at": "2026-11-28T13:00:00Z",
                "pcr_selection": {"sha256": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14]},
                "known_event_log_sha256": self.known_log.hex() if self.known_log else None,
            }), 201  # fmt: skip

        @app.post("/v1/nodes/<node>/evidence")
        def evidence(node: str) -> tuple[Response, int]:
            assert request.content_type == "application/cbor"
            bundle = cbor2.loads(request.get_data())
            self.bundles.append(bundle)
            pcrs = {HashAlg.from_bank(b): v for b, v in bundle["pcrs"].items()}
            verify_quote(bundle["attest"], bundle["signature"], self.enrolled[node],
                         self.nonces.pop(node), pcrs)  # fmt: skip
            return jsonify({"attestation_id": secrets.token_hex(4), "status": self.status,
                            "reason": "fake", "node_state": "admitted", "checks": []}), 200  # fmt: skip

        return app


@pytest.fixture()
def verifier() -> Iterator[FakeVerifier]:
    fake = FakeVerifier()
    server = make_server("127.0.0.1", 0, fake.app(), threaded=True)
    fake.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> swtpm.SwtpmNode:
    base = tmp_path_factory.mktemp("agent-factory")
    return swtpm.provision(base / "tpm", base / "ca")


@pytest.fixture()
def node(template: swtpm.SwtpmNode, tmp_path: Path) -> Iterator[swtpm.SwtpmNode]:
    with swtpm.running(swtpm.clone(template, tmp_path / "node"), startup=False) as started:
        simulate_boot(started.tcti, LOG.read_bytes(), eventlog_out=started.eventlog)
        yield started


def _argv(node: swtpm.SwtpmNode, tmp_path: Path, *rest: str) -> list[str]:
    return ["--tcti", node.tcti, "--state-dir", str(tmp_path / "state"),
            "--eventlog", str(node.eventlog), "--node", "node-1", *rest]  # fmt: skip


def _config(node: swtpm.SwtpmNode, tmp_path: Path, url: str, **extra: Any) -> AgentConfig:
    return load_config(
        {"tcti": node.tcti, "state_dir": tmp_path / "state", "eventlog": node.eventlog,
         "node": "node-1", "verifier": url, "enroll_token": TOKEN, **extra},
        env={},
    )  # fmt: skip


def test_enroll_then_attest_sends_the_documented_bundle(
    node: swtpm.SwtpmNode, tmp_path: Path, verifier: FakeVerifier
) -> None:
    base = _argv(node, tmp_path)
    assert cli([*base, "enroll", "--verifier", verifier.url, "--token", TOKEN]) == EXIT_OK
    assert "node-1" in verifier.enrolled
    assert (tmp_path / "state" / "enrollment.json").stat().st_mode & 0o777 == 0o600
    assert cli([*base, "attest", "--verifier", verifier.url]) == EXIT_OK
    (bundle,) = verifier.bundles
    assert set(bundle) == {"v", "node", "agent_version", "nonce", "attest", "signature", "pcrs",
                           "event_log_sha256", "event_log"}  # fmt: skip
    assert (
        bundle["v"] == 1 and bundle["node"] == "node-1" and bundle["agent_version"] == __version__
    )
    assert list(bundle["pcrs"]) == ["sha256"]
    assert sorted(bundle["pcrs"]["sha256"]) == [*range(10), 14]  # integer keys
    assert bundle["event_log"] == LOG.read_bytes()
    assert bundle["event_log_sha256"] == HashAlg.SHA256.hash(LOG.read_bytes())
    assert verifier.user_agents == {f"assay-agent/{__version__}"}


def test_event_log_is_left_out_when_the_verifier_holds_its_digest(
    node: swtpm.SwtpmNode, tmp_path: Path, verifier: FakeVerifier
) -> None:
    config = _config(node, tmp_path, verifier.url)
    client = VerifierClient(verifier.url)
    verifier.known_log = HashAlg.SHA256.hash(LOG.read_bytes())
    stats = run(config, client, iterations=1, sleep=lambda _: None)
    assert stats.enrollments == 1 and stats.attestations == 1
    assert "event_log" not in verifier.bundles[0]
    assert verifier.bundles[0]["event_log_sha256"] == verifier.known_log
    verifier.known_log = bytes(32)  # the verifier holds another boot's log: send it
    run(config, client, iterations=1, sleep=lambda _: None)
    assert verifier.bundles[1]["event_log"] == LOG.read_bytes()


def test_run_reenrolls_only_when_told_node_not_enrolled(
    node: swtpm.SwtpmNode, tmp_path: Path, verifier: FakeVerifier
) -> None:
    config = _config(node, tmp_path, verifier.url)
    client = VerifierClient(verifier.url)

    def forget(_: float) -> None:
        verifier.enrolled.clear()  # the verifier lost the node between rounds

    stats = run(config, client, iterations=3, sleep=forget)
    assert stats.attestations == 3 and stats.enrollments == 3 and stats.failures == 0
    assert verifier.calls.count("/v1/enrollments") == 3
    verifier.fail_challenges = 1  # a 503 is not "not enrolled": retry, never re-enroll
    stats = run(config, client, iterations=2, sleep=lambda _: None)
    assert stats.failures == 1 and stats.attestations == 1 and stats.enrollments == 0


def test_run_backs_off_exponentially_then_returns_to_the_interval(
    node: swtpm.SwtpmNode, tmp_path: Path, verifier: FakeVerifier
) -> None:
    config = _config(node, tmp_path, verifier.url, interval=30, jitter=0.1, max_backoff=300)
    client = VerifierClient(verifier.url)
    run(config, client, iterations=1, sleep=lambda _: None)  # enrolls
    verifier.fail_challenges = 4
    delays: list[float] = []
    stats = run(config, client, iterations=6, sleep=delays.append, rng=random.Random(7))
    assert stats.failures == 4 and stats.attestations == 2
    backoff = delays[:4]
    assert all(a < b for a, b in itertools.pairwise(backoff)), backoff
    assert 2.5 <= backoff[0] <= 5 and 20 <= backoff[3] <= 40
    assert 27 <= delays[4] <= 33  # interval ± 10 % after a success


def test_backoff_is_capped() -> None:
    config = AgentConfig(interval=60, max_backoff=100)
    rng = random.Random(1)
    assert max(next_delay(config, n, rng) for n in range(1, 40)) <= 100


def _run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("assay-agent: ")
    return lines[0]


def test_no_tpm_device_exits_3_with_one_line(tmp_path: Path) -> None:
    proc = _run_cli("--tcti", f"device:{tmp_path}/tpmrm0", "tpm", "info")
    assert proc.returncode == EXIT_NO_TPM
    assert "no TPM device" in _one_line(proc)


def test_unreachable_swtpm_is_no_tpm_device(tmp_path: Path) -> None:
    port = swtpm.free_port_pair()
    proc = _run_cli("--tcti", f"swtpm:host=127.0.0.1,port={port}", "--state-dir", str(tmp_path),
                    "quote", "--nonce", "00")  # fmt: skip
    assert proc.returncode == EXIT_NO_TPM, proc.stderr
    _one_line(proc)


def test_tpm_error_exits_5(template: swtpm.SwtpmNode, tmp_path: Path) -> None:
    # A TPM that was never started answers TPM_RC_INITIALIZE to everything.
    with swtpm.running(swtpm.clone(template, tmp_path / "n"), startup=False) as cold:
        proc = _run_cli("--tcti", cold.tcti, "tpm", "info")
    assert proc.returncode == EXIT_TPM_ERROR
    assert "TPM" in _one_line(proc)


def test_tpm_device_held_elsewhere_exits_4_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # /dev/tpm0 (no resource manager) answers EBUSY while another process has it open; there is
    # no kernel TPM here, so the kernel's answer is stood in for at os.open.
    device = tmp_path / "tpm0"
    device.touch()
    real_open = os.open

    def held(path: Any, flags: int, *rest: Any) -> int:
        if str(path) == str(device):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        return real_open(path, flags, *rest)

    monkeypatch.setattr(os, "open", held)
    assert cli(["--tcti", f"device:{device}", "tpm", "info"]) == EXIT_TPM_BUSY
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"assay-agent: TPM device {device} is in use by another process"]


def test_tpm_retry_and_yield_codes_are_busy_not_errors() -> None:
    for rc in (0x922, 0x908, 0x90A):
        assert isinstance(_rc_error(TSS2_Exception(rc), "TPM2_Quote"), TpmBusy)
    assert not isinstance(_rc_error(TSS2_Exception(0x100), "TPM2_Quote"), TpmBusy)


@dataclass
class BusySpell:
    """While ``busy``, the next ``quotes`` quotes (all of them when None) are refused."""

    busy: bool = True
    quotes: int | None = None
    refused: int = 0
    commands: list[int] = field(default_factory=list)  # every command code sent, in order


class QuoteRetryInjector(PyTCTI):  # type: ignore[misc]  # tpm2_pytss ships no type information
    """Fault injection, NOT a TPM: every command goes to the real swtpm, except that during a
    ``BusySpell`` a TPM2_Quote is answered TPM_RC_RETRY (what a TPM busy with other work says)
    without reaching it. Tests what ESAPI and the agent do with a busy TPM."""

    def __init__(self, spec: str, spell: BusySpell) -> None:
        super().__init__(max_size=4096, magic=b"ASSAYBSY")
        name, _, conf = spec.partition(":")
        self._tpm = TCTILdr(name, conf)
        self._spell = spell
        self._reply: bytes | None = None

    def do_transmit(self, command: bytes) -> None:
        (code,) = struct.unpack_from(">I", command, 6)
        spell = self._spell
        spell.commands.append(code)
        if code == 0x158 and spell.busy and spell.quotes != 0:  # TPM_CC_Quote
            spell.refused += 1
            spell.quotes = None if spell.quotes is None else spell.quotes - 1
            self._reply = struct.pack(">HII", 0x8001, 10, 0x922)  # TPM_RC_RETRY
        else:
            self._tpm.transmit(bytes(command))

    def do_receive(self, timeout: int) -> bytes:
        if self._reply is not None:
            reply, self._reply = self._reply, None
            return reply
        return bytes(self._tpm.receive(4096, timeout))

    def do_finalize(self) -> None:
        self._tpm.finalize()


def _busy_tpm(node: swtpm.SwtpmNode, spell: BusySpell) -> Callable[[], Tpm]:
    return lambda: Tpm(QuoteRetryInjector(node.tcti, spell), describe=TctiSpec("injector", None))


def _transient_objects(node: swtpm.SwtpmNode) -> int:
    with Tpm(node.tcti) as tpm:
        _, data = tpm.esys.get_capability(TPM2_CAP.HANDLES, int(TPM2_HR.TRANSIENT), 64)
        return len(data.data.handles)


def test_busy_tpm_is_resubmitted_by_esapi_then_retried_by_run_with_backoff(
    node: swtpm.SwtpmNode,
    tmp_path: Path,
    verifier: FakeVerifier,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(node, tmp_path, verifier.url, interval=30, jitter=0, max_backoff=300)
    client = VerifierClient(verifier.url)
    run(config, client, iterations=1, sleep=lambda _: None)  # enrolls, straight to the swtpm

    # A short spell, within ESAPI's resubmission limit, never reaches the agent.
    short = BusySpell(quotes=2)
    stats = run(config, client, iterations=1, sleep=lambda _: None, open_tpm=_busy_tpm(node, short))
    assert stats.failures == 0 and stats.attestations == 1 and short.refused == 2

    # A long one: each round fails with one line, run backs off, then attests once it is over.
    spell = BusySpell()
    delays: list[float] = []

    def sleep(delay: float) -> None:
        delays.append(delay)
        spell.busy = len(delays) < 2  # busy for two rounds, then free again

    capsys.readouterr()
    stats = run(config, client, iterations=3, sleep=sleep, open_tpm=_busy_tpm(node, spell),
                rng=random.Random(5))  # fmt: skip
    assert stats.failures == 2 and stats.attestations == 1
    assert stats.last is not None and stats.last.status == "trusted"
    assert spell.refused > 2  # ESAPI resubmitted each refused quote before giving up
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("(TpmBusy)" in ln and "TPM busy" in ln for ln in lines), lines
    assert delays[0] < delays[1] < 30  # backoff, growing
    assert _transient_objects(node) == 0  # nothing left loaded in a TPM without resource manager
    assert len(verifier.bundles) == 3  # enrolling round, short spell, after the long spell


CC_CREATE_PRIMARY, CC_CONTEXT_LOAD = 0x131, 0x161


def test_quote_loads_the_saved_ak_context_and_falls_back_when_it_does_not_fit(
    node: swtpm.SwtpmNode, tmp_path: Path, verifier: FakeVerifier
) -> None:
    config = _config(node, tmp_path, verifier.url)
    client = VerifierClient(verifier.url)
    run(config, client, iterations=1, sleep=lambda _: None)  # enrolls; the first quote saves
    saved = tmp_path / "state" / "ak.ctx"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    tap = BusySpell(busy=False)

    def attest_once() -> list[int]:
        tap.commands.clear()
        stats = run(
            config, client, iterations=1, sleep=lambda _: None, open_tpm=_busy_tpm(node, tap)
        )
        assert stats.attestations == 1 and stats.failures == 0  # FakeVerifier checked the quote
        return [tap.commands.count(CC_CREATE_PRIMARY), tap.commands.count(CC_CONTEXT_LOAD)]

    assert attest_once() == [0, 1]  # one ContextLoad, no EK
    assert attest_once() == [0, 1]
    # Damaged: loaded under the EK again, and saved anew.
    saved.write_bytes(b"\x00" * 12)
    assert attest_once() == [1, 0]
    assert attest_once() == [0, 1]
    # Another AK of the same TPM: it loads, but its Name is not this AK's, so it is not used.
    other = tmp_path / "other"
    with Tpm(node.tcti) as tpm:
        tpm.quote(tpm.create_ak("rsa"), b"n", {HashAlg.SHA256: (0,)}, saved=AkContextFile(other))
    saved.write_bytes((other / "ak.ctx").read_bytes())
    assert attest_once() == [1, 1]
    # After a TPM reset (power cycle, Startup(CLEAR)) the TPM refuses the old context.
    subprocess.run(["swtpm_ioctl", "--tcp", f"{node.host}:{node.ctrl_port}", "-i"], check=True)
    with Tpm(node.tcti) as tpm:
        tpm.startup()
    assert attest_once() == [1, 1]
    assert attest_once() == [0, 1]
    assert _transient_objects(node) == 0


def test_unreachable_verifier_exits_6(node: swtpm.SwtpmNode, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{swtpm.free_port_pair()}"
    proc = _run_cli(*_argv(node, tmp_path, "attest", "--verifier", url))
    assert proc.returncode == EXIT_VERIFIER_UNREACHABLE
    assert "unreachable" in _one_line(proc)


def test_refused_enrollment_exits_7_with_the_verifier_code(
    node: swtpm.SwtpmNode, tmp_path: Path, verifier: FakeVerifier
) -> None:
    proc = _run_cli(*_argv(node, tmp_path, "enroll", "--verifier", verifier.url, "--token", "x"))
    assert proc.returncode == EXIT_VERIFIER_REFUSED
    assert "bad_enroll_token" in _one_line(proc)


def test_unreadable_event_log_exits_8(
    node: swtpm.SwtpmNode, tmp_path: Path, verifier: FakeVerifier
) -> None:
    config = _config(node, tmp_path, verifier.url)
    run(config, VerifierClient(verifier.url), iterations=1, sleep=lambda _: None)
    argv = _argv(node, tmp_path, "attest", "--verifier", verifier.url)
    argv[argv.index("--eventlog") + 1] = str(tmp_path / "missing")
    proc = _run_cli(*argv)
    assert proc.returncode == EXIT_EVENTLOG_UNREADABLE
    assert "missing" in _one_line(proc)


def test_untrusted_verdict_exits_10(
    node: swtpm.SwtpmNode,
    tmp_path: Path,
    verifier: FakeVerifier,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = _argv(node, tmp_path)
    assert cli([*base, "enroll", "--verifier", verifier.url, "--token", TOKEN]) == EXIT_OK
    verifier.status = "untrusted"
    assert cli([*base, "attest", "--verifier", verifier.url]) == EXIT_UNTRUSTED
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("untrusted: fake (node admitted")


def test_config_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "tcti: swtpm:host=file,port=1\ninterval: 5\nnode: from-file\nlabels: {rack: r1}\n"
    )
    env = {"ASSAY_AGENT_CONFIG": str(cfg), "ASSAY_AGENT_INTERVAL": "7", "ASSAY_AGENT_NODE": "env"}
    config = load_config({"node": "flag", "tcti": None}, env=env)
    assert config.node == "flag"  # flag beats env and file
    assert config.interval == 7.0  # env beats file
    assert config.tcti == "swtpm:host=file,port=1"  # file beats the default
    assert dict(config.labels) == {"rack": "r1"}
    assert config.pcrs == "sha256:0-9,14"  # default
    assert load_config(env={}).tcti == "device:/dev/tpmrm0"


def test_bad_configuration_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PCR range"):
        load_config({"pcrs": "sha256:0-30"}, env={})
    with pytest.raises(ConfigurationError, match="unknown setting"):
        load_config(env={"ASSAY_AGENT_COLOUR": "x"})
    assert parse_pcr_selection("sha256:0-2,14+sha1:7") == {
        HashAlg.SHA256: (0, 1, 2, 14),
        HashAlg.SHA1: (7,),
    }
    proc = _run_cli("--state-dir", str(tmp_path), "quote", "--pcrs", "sha256:99", "--nonce", "00")
    assert proc.returncode == 2
    assert "outside 0-23" in _one_line(proc)
