"""Structured logs of a full run, and not one secret in them.

A real gunicorn verifier with ``log_format: json`` and a swtpm node booted from a real log: db init
(the bootstrap token), an enroll token, enrollment with credential activation, attestations, a
refused wrong nonce, a replayed bundle, garbage evidence, then ``assay-agent run`` with JSON logs.
The verifier and the agent run under Linux's memory-deny-write-execute (``PR_SET_MDWE``, what the
units' ``MemoryDenyWriteExecute=yes`` asks of the kernel), so the e2e also shows that they need no
writable code. Every line of both logs must be one JSON object, the events must carry node,
attestation id and reason, and no line may contain any secret the run handled: tokens, nonces,
enrollment ids, activation keys and secrets, the AK's private blob, the TLS key.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from agent.client import VerifierClient
from agent.config import AgentConfig
from agent.errors import VerifierRefused
from agent.evidence import encode_bundle
from agent.node import EnrollmentSession, attest, collect_evidence, ensure_ak
from agent.tpm import Tpm
from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.yamlfmt import dump_yaml
from testkit import swtpm, tls
from testkit.bootsim import simulate_boot
from testkit.service import run_server
from verifier.service import ServiceConfig

from .conftest import CORPUS

pytestmark = pytest.mark.swtpm

SB_LOG = (CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin").read_bytes()
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def deny_write_execute() -> None:
    """In the child before exec: no memory may become writable and executable (inherited)."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0):
        os._exit(97)


@dataclass
class Run:
    server_log: Path
    agent_log: str
    secrets: dict[str, str] = field(default_factory=dict)
    attestation_ids: list[str] = field(default_factory=list)
    node: str = "logs-node-1"


def _forms(value: bytes) -> list[str]:
    return [value.hex(), base64.b64encode(value).decode()]


def _db_init(db: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "verifier", "db", "init", "--database", db, "--json"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    token: str = json.loads(done.stdout)["bootstrap_token"]["token"]
    return token


def _admin(url: str, ca: Path, admin: str, path: str, **kwargs: object) -> requests.Response:
    resp = requests.post(
        url + path, headers={"Authorization": f"Bearer {admin}"}, verify=str(ca), timeout=30,
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip
    assert resp.status_code < 300, resp.text
    return resp


def _enroll(config: AgentConfig, client: VerifierClient, run: Run) -> None:
    """Enrollment through the agent's own state machine, keeping what it handles secret."""
    with Tpm(config.tcti) as tpm:
        ak, _ = ensure_ak(config, tpm)
        session = EnrollmentSession(config, client)
        challenge = session.send_keys(tpm.endorsement_key(ak.ek_kind), ak)
        secret = tpm.activate_credential(ak, challenge.credential_blob, challenge.encrypted_secret)
        client.activate(challenge.enrollment_id, challenge.activation_key, secret)
    run.secrets["enrollment id"] = challenge.enrollment_id
    run.secrets["activation key"] = challenge.activation_key
    for i, form in enumerate(_forms(secret)):
        run.secrets[f"credential secret {i}"] = form
    for i, form in enumerate(_forms(ak.private)):
        run.secrets[f"AK private blob {i}"] = form


def _bundle(config: AgentConfig, nonce: bytes) -> bytes:
    with Tpm(config.tcti) as tpm:
        ak, _ = ensure_ak(config, tpm)
        pcrs = {HashAlg.SHA256: (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14)}
        return encode_bundle(collect_evidence(config, tpm, ak, nonce, pcrs))


def _attest(config: AgentConfig, client: VerifierClient, run: Run) -> None:
    """Attestations, and the refusals whose messages name a nonce."""
    run.attestation_ids.append(attest(config, client).attestation_id)
    for i in range(2):
        nonce = client.challenge(config.node).nonce
        run.secrets[f"nonce {i}"] = nonce.hex()
        bundle = _bundle(config, nonce)
        run.attestation_ids.append(client.submit(config.node, bundle).attestation_id)
    with pytest.raises(VerifierRefused, match="nonce_reused"):
        client.submit(config.node, bundle)
    wrong = os.urandom(32)
    run.secrets["unissued nonce"] = wrong.hex()
    with pytest.raises(VerifierRefused, match="nonce_unknown"):
        client.submit(config.node, _bundle(config, wrong))
    with pytest.raises(VerifierRefused, match="malformed_evidence"):
        client.submit(config.node, b"\xa1\x01")


def _agent_run(config: AgentConfig, url: str, ca: Path) -> str:
    env = {
        **os.environ,
        "ASSAY_AGENT_LOG_FORMAT": "json",
        "ASSAY_AGENT_TLS_CA": str(ca),
        "ASSAY_AGENT_VERIFIER": url,
        "ASSAY_AGENT_TCTI": config.tcti,
        "ASSAY_AGENT_STATE_DIR": str(config.state_dir),
        "ASSAY_AGENT_EVENTLOG": str(config.eventlog),
        "ASSAY_AGENT_NODE": config.node,
        "ASSAY_AGENT_INTERVAL": "0.2",
    }
    done = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--count", "2"],
        capture_output=True, text=True, timeout=120, env=env, preexec_fn=deny_write_execute,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("logs")
    ca = tls.make_ca(base / "tls-ca")
    cert = tls.issue(ca, base / "tls", ("127.0.0.1",))
    tpm = swtpm.provision(base / "tpm", base / "ca")
    swtpm.export_ca(base / "ca", base / "vendor-ca")
    db = str(base / "v.db")
    admin = _db_init(db)
    golden = capture(
        assume_quoted_for_review(parse_event_log(SB_LOG), HashAlg.SHA256), name="logs", version="1"
    )
    config = ServiceConfig(
        database=db, ek_ca_dir=str(base / "vendor-ca"), workers=1, log_format="json",
        tls_cert=str(cert.cert_path), tls_key=str(cert.key_path),
    )  # fmt: skip
    run = Run(server_log=base / "server.log", agent_log="")
    run.secrets["admin token"] = admin
    run.secrets["TLS key"] = cert.key_path.read_text().splitlines()[1]
    with run_server(
        config, tls_ca=ca.cert_path, log_path=run.server_log, preexec_fn=deny_write_execute
    ) as url:
        _admin(url, ca.cert_path, admin, "/v1/golden", data=dump_yaml(golden).encode())
        _admin(url, ca.cert_path, admin, "/v1/golden/assignments",
               json={"golden": "logs", "selector": {"pool": "logs"}})  # fmt: skip
        enroll_token = _admin(
            url,
            ca.cert_path,
            admin,
            "/v1/tokens",
            json={"role": "enroll", "labels": {"pool": "logs"}},
        ).json()["token"]
        run.secrets["enroll token"] = enroll_token
        node = swtpm.start(tpm, startup=False)
        try:
            simulate_boot(node.tcti, SB_LOG, eventlog_out=node.eventlog)
            agent = AgentConfig(
                tcti=node.tcti, state_dir=base / "agent", eventlog=node.eventlog, verifier=url,
                node=run.node, enroll_token=enroll_token, tls_ca=str(ca.cert_path),
            )  # fmt: skip
            client = VerifierClient(url, tls_ca=str(ca.cert_path), timeout=30)
            _enroll(agent, client, run)
            _attest(agent, client, run)
            run.agent_log = _agent_run(agent, url, ca.cert_path)
        finally:
            swtpm.stop(node)
    for name in ("admin token", "enroll token"):
        run.secrets[f"{name} secret part"] = run.secrets[name].split("_", 2)[
            2
        ]  # the urlsafe secret may hold "_" itself
    yield run


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_every_verifier_log_line_is_one_json_event(full_run: Run) -> None:
    lines = _lines(full_run.server_log.read_text())
    assert lines and all({"time", "level", "event"} <= set(line) for line in lines)
    evidence = [x for x in lines if x["event"] == "attestation.evidence"]
    trusted = [x for x in evidence if x.get("status") == "trusted"]
    assert {x["attestation_id"] for x in trusted} >= set(full_run.attestation_ids)
    assert all(x["node"] == full_run.node and x["reason"] is not None for x in trusted)
    codes = {x.get("code") for x in evidence if x["http_status"] != 200}
    assert codes >= {"nonce_reused", "nonce_unknown", "malformed_evidence"}
    enrolled = [x for x in lines if x["event"] == "enrollment.activate"]
    assert enrolled and enrolled[0]["http_status"] == 200 and enrolled[0]["node"] == full_run.node
    assert any(x["event"] == "admin.create_token" and "actor" in x for x in lines)


def test_every_agent_log_line_is_one_json_event(full_run: Run) -> None:
    lines = _lines(full_run.agent_log)
    attested = [x for x in lines if x["event"] == "attestation"]
    assert len(attested) == 2 and all(x["node"] == full_run.node for x in attested)
    assert all(x["status"] == "trusted" and x["attestation_id"] for x in attested)


@pytest.mark.parametrize("log", ["verifier", "agent"])
def test_no_secret_the_run_handled_is_in_any_log_line(full_run: Run, log: str) -> None:
    text = full_run.server_log.read_text() if log == "verifier" else full_run.agent_log
    assert len(full_run.secrets) >= 12
    for line in text.splitlines():
        for name, secret in full_run.secrets.items():
            assert secret not in line, f"{log} log line holds the {name}: {line[:200]}"


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """The logging set-up as it was: these tests configure loggers in this process."""
    import logging

    names = ("", "assay", "assay.events", "gunicorn.error", "gunicorn.access")
    saved = [
        (lg, list(lg.handlers), lg.level, lg.propagate, lg.disabled)
        for lg in (logging.getLogger(n) for n in names)
    ]
    yield
    for lg, handlers, level, propagate, disabled in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled


@pytest.mark.usefixtures("logging_restored")
def test_gunicorn_builds_no_access_line_but_still_logs_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """gunicorn counts our logconfig_dict as an access log and would build every request's
    atoms only to drop them: the verifier's logger class skips that, and keeps the error log."""
    from gunicorn.glogging import Logger

    from verifier.service._logging import GunicornLogger
    from verifier.service.server import VerifierServer

    server = VerifierServer(ServiceConfig(database=f"sqlite:///{tmp_path / 'v.db'}"))
    assert server.cfg.logger_class is GunicornLogger and server.cfg.accesslog is None
    logger = GunicornLogger(server.cfg)

    def no_atoms(*args: object) -> dict[str, str]:
        raise AssertionError("an access line was built")

    logger.atoms = no_atoms  # type: ignore[method-assign]
    assert Logger(server.cfg).access_log_enabled  # what gunicorn alone would do
    logger.access(None, None, {}, None)
    logger.error("boom %s", "here")
    assert "boom here" in capsys.readouterr().err


@pytest.mark.usefixtures("logging_restored")
def test_an_unchanged_re_attestation_is_counted_not_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One line for the full record, none for its counted repeats; a refusal or a new full
    record after them is a line again."""
    from verifier.service import _logging

    _logging.configure("json")
    route = "/v1/nodes/<node>/evidence"
    answers = [
        (200, {"attestation_id": "7", "status": "trusted", "repeat": 0}),
        (200, {"attestation_id": "7", "status": "trusted", "repeat": 1}),
        (200, {"attestation_id": "7", "status": "trusted", "repeat": 2}),
        (422, {"error": {"code": "nonce_reused", "message": "x"}, "repeat": 3}),
        (200, {"attestation_id": "8", "status": "untrusted", "repeat": True}),
        (200, {"attestation_id": "9", "status": "trusted", "repeat": "1"}),
    ]
    for status, answer in answers:
        _logging.log_request(
            "POST", "attestation.evidence", route, status, None, {"node": "n"}, lambda a=answer: a
        )
    lines = _lines(capsys.readouterr().err)
    got = [(x["http_status"], x.get("attestation_id"), x.get("code")) for x in lines]
    assert got == [
        (200, "7", None),
        (422, None, "nonce_reused"),
        (200, "8", None),
        (200, "9", None),
    ]
