"""The product around the VMs: a real verifier (gunicorn, SQLite), golden sets made with the
``golden`` CLI, and the agent's own enrollment/attestation code driving the taken-over TPM.

``VmAgent`` uses the agent's building blocks (``ensure_ak``, ``EnrollmentSession``,
``collect_evidence``, ``VerifierClient``) with :class:`tests.vm.swtpm_handoff.HandoffTpm`, because
``agent.node.enroll``/``attest`` open ``Tpm(config.tcti)`` by name and cannot take a custom TCTI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from agent.client import AttestationResult, VerifierClient
from agent.config import AgentConfig
from agent.node import attest, enroll
from agent.state import Enrollment
from testkit.service import run_server
from verifier.service import ServiceConfig
from verifier.store import Store, repo, upgrade

from .runner import VmNode

ROOT = Path(__file__).resolve().parents[2]


def golden_cli(*args: str | Path) -> None:
    """``python -m golden ARGS`` as an operator runs it; a failure shows its stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "golden", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, f"golden {args[0]} failed: {proc.stderr.strip()}"


@dataclass(frozen=True, slots=True)
class Verifier:
    url: str
    admin_token: str
    enroll_token: str

    @property
    def _admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def _call(
        self, method: str, path: str, *, content_type: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        headers = self._admin | ({"Content-Type": content_type} if content_type else {})
        resp = requests.request(
            method, f"{self.url}/v1{path}", headers=headers, timeout=60, **kwargs
        )
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text[:300]}"
        out: dict[str, Any] = resp.json()
        return out

    def add_golden(self, yaml_file: Path, selector: Mapping[str, str]) -> str:
        """Upload a golden set (YAML) and assign its name to nodes matching ``selector``."""
        added = self._call(
            "POST",
            "/golden",
            data=yaml_file.read_bytes(),
            content_type="application/yaml",
        )
        self._call(
            "POST",
            "/golden/assignments",
            json={"golden": added["name"], "selector": dict(selector)},
        )
        return str(added["id"])

    def add_runtime(self, yaml_file: Path, selector: Mapping[str, str]) -> str:
        """Upload a runtime (IMA) policy and assign its name to nodes matching ``selector``."""
        added = self._call(
            "POST", "/runtime-policies", data=yaml_file.read_bytes(),
            content_type="application/yaml",
        )  # fmt: skip
        self._call(
            "POST",
            "/runtime-policies/assignments",
            json={"policy": added["name"], "selector": dict(selector)},
        )
        return str(added["name"])

    def enroll_token_for(self, labels: Mapping[str, str]) -> str:
        """An enroll token carrying ``labels``: the operator, not the node, labels it."""
        made = self._call("POST", "/tokens", json={"role": "enroll", "labels": dict(labels)})
        return str(made["token"])

    def revoke(self, name: str, version: str, reason: str) -> dict[str, Any]:
        return self._call("POST", f"/golden/{name}/{version}/revoke", json={"reason": reason})

    def node(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/nodes/{name}")

    def outdated(self) -> dict[str, list[str]]:
        """Node → its outdated booted versions (``name@version why``), as ``?outdated=true``."""
        nodes = self._call("GET", "/nodes", params={"outdated": "true"})["nodes"]
        return {n["name"]: [f"{o['version']} {o['why']}" for o in n["outdated"]] for n in nodes}

    def attestation(self, attestation_id: str) -> dict[str, Any]:
        """The reviewer's view of one attestation: the whole verdict."""
        return self._call("GET", f"/attestations/{attestation_id}")


@contextlib.contextmanager
def running_verifier(workdir: Path, ek_ca_dir: Path) -> Iterator[Verifier]:
    """A verifier on a free port with its own SQLite file, trusting the CAs in ``ek_ca_dir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "verifier.db"
    store = Store(str(db))
    try:
        upgrade(store)
        with store.write() as s:
            admin, _ = repo.create_token(s, "admin", expires_at=None)
            enroll, _ = repo.create_token(s, "enroll", expires_at=None)
    finally:
        store.close()
    config = ServiceConfig(database=str(db), ek_ca_dir=str(ek_ca_dir), workers=1)
    try:
        with run_server(config) as url:
            yield Verifier(url, admin, enroll)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class VmAgent:
    """The agent for one booted VM node, against one verifier (its own state directory)."""

    def __init__(
        self,
        node: VmNode,
        verifier: Verifier,
        name: str,
        labels: Mapping[str, str],
        state: Path,
        *,
        enroll_token: str | None = None,
    ) -> None:
        """``enroll_token``: one the operator made (e.g. with ``verifier token create``); by
        default one is made here carrying ``labels`` (or the verifier's shared one)."""
        self.node = node
        self.verifier = verifier
        if enroll_token is None:
            enroll_token = verifier.enroll_token_for(labels) if labels else verifier.enroll_token
        self.config = AgentConfig(
            tcti="swtpm-handoff",
            state_dir=state,
            eventlog=node.eventlog_path,
            ima_log=node.ima_path if node.image.disk is not None else None,
            verifier=verifier.url,
            node=name,
            enroll_token=enroll_token,
        )
        self.client = VerifierClient(verifier.url, timeout=60)

    def enroll(self) -> Enrollment:
        """EK (+ certificate) and AK to the verifier, credential activated in the node's TPM."""
        return enroll(self.config, self.client, open_tpm=self.node.tpm)

    def attest(self) -> AttestationResult:
        """Challenge, quote over the verifier's selection, evidence bundle, verdict — as the
        reviewer reads it (the node itself is told only the codes, issue 10 §5)."""
        told = attest(self.config, self.client, open_tpm=self.node.tpm)
        full = self.verifier.attestation(told.attestation_id)
        verdict = full["verdict"]
        assert (verdict["status"], full["reason"].split(":")[0]) == (told.status, told.reason)
        return dataclasses.replace(
            told, reason=str(full["reason"]), checks=tuple(verdict["checks"])
        )

    def close(self) -> None:
        self.client.close()


def failures(result: AttestationResult) -> list[Mapping[str, Any]]:
    return [c for c in result.checks if c.get("status") != "pass"]


def failing_reasons(result: AttestationResult) -> set[str]:
    return {str(c["reason"]) for c in failures(result)}


def apps_of(checks: Sequence[Mapping[str, Any]], reason: str) -> list[tuple[Any, Any]]:
    """(pcr, event) of every check with ``reason``."""
    return [(c.get("pcr"), c.get("event")) for c in checks if c.get("reason") == reason]
