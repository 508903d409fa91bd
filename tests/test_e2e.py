"""End to end: the verifier under gunicorn, swtpm nodes booted from a real log, the real agent over HTTP.

Nothing in-process: the verifier is ``python -m verifier serve`` on a free port, each node is a
swtpm manufactured with the project-local CA and booted with the boot simulator, and the node side
is the agent's own code (``agent.node``, ``agent.client``) or its command line. Each refusal is
checked by the verifier's stable error code.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import requests

from agent.client import VerifierClient
from agent.config import AgentConfig
from agent.errors import VerifierRefused
from agent.evidence import encode_bundle
from agent.node import attest, collect_evidence, enroll, ensure_ak
from agent.tpm import Tpm
from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.yamlfmt import dump_yaml
from testkit import swtpm
from testkit.bootsim import simulate_boot
from testkit.service import run_server
from verifier.service import ServiceConfig
from verifier.store import Store, upgrade

from .conftest import CORPUS

pytestmark = pytest.mark.swtpm

SB_LOG = (CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin").read_bytes()
NONCE_LIFETIME = 3.0
FRESHNESS = 6.0  # attest_interval 1 s x freshness_factor 6


@dataclass
class Env:
    url: str
    db: str
    admin: str
    template: swtpm.SwtpmNode
    base: Path

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "verifier", *args, "--database", self.db],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return out.stdout

    def token(self, role: str, *labels: str) -> str:
        """A new token; ``labels`` (``k=v``) for enroll tokens: the operator labels the nodes."""
        extra = [x for label in labels for x in ("--label", label)]
        token: str = json.loads(self.cli("token", "create", "--role", role, *extra, "--json"))[
            "token"
        ]
        return token

    def get(self, path: str) -> requests.Response:
        return requests.get(
            self.url + path, headers={"Authorization": f"Bearer {self.admin}"}, timeout=10
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("e2e")
    template = swtpm.provision(base / "factory" / "tpm", base / "ca")
    swtpm.export_ca(base / "ca", base / "vendor-ca")
    db = str(base / "verifier.db")
    upgrade(Store(db))
    golden = capture(
        assume_quoted_for_review(parse_event_log(SB_LOG), HashAlg.SHA256), name="e2e", version="1"
    )
    (base / "golden.yaml").write_text(dump_yaml(golden))
    config = ServiceConfig(
        database=db,
        ek_ca_dir=str(base / "vendor-ca"),
        nonce_lifetime=NONCE_LIFETIME,
        attest_interval=1.0,
        freshness_factor=FRESHNESS,
        workers=2,
    )
    with run_server(config) as url:
        e = Env(url=url, db=db, admin="", template=template, base=base)
        e.admin = e.token("admin")
        e.cli("golden", "add", str(base / "golden.yaml"))
        e.cli("golden", "assign", "e2e", "--selector", "group=main")
        yield e


@dataclass
class Node:
    tpm: swtpm.SwtpmNode
    config: AgentConfig
    client: VerifierClient


_counter = iter(range(1000))


@pytest.fixture()
def make_node(env: Env, tmp_path: Path) -> Iterator[object]:
    started: list[swtpm.SwtpmNode] = []

    def make(
        log: bytes = SB_LOG,
        *,
        extra_extends: tuple[tuple[int, bytes], ...] = (),
        replacements: dict[int, bytes] | None = None,
        log_only: bool = False,
        name: str | None = None,
        group: str = "main",
    ) -> Node:
        n = next(_counter)
        # Its own TPM (own EK): one TPM is one node, so clones of one template would be refused.
        own = swtpm.provision(tmp_path / f"tpm{n}", env.base / "ca")
        tpm = swtpm.start(own, startup=False)
        started.append(tpm)
        simulate_boot(
            tpm.tcti,
            log,
            eventlog_out=tpm.eventlog,
            extra_extends=extra_extends,
            replacements=replacements,
            log_only=log_only,
        )
        config = AgentConfig(
            tcti=tpm.tcti,
            state_dir=tmp_path / f"agent{n}",
            eventlog=tpm.eventlog,
            verifier=env.url,
            node=name or f"node-{tmp_path.name[-12:]}-{n}",
            enroll_token=env.token("enroll", f"group={group}"),
        )
        return Node(tpm, config, VerifierClient(env.url, timeout=30))

    yield make
    for tpm in started:
        swtpm.stop(tpm)


def _refusal(excinfo: pytest.ExceptionInfo[VerifierRefused]) -> str:
    return excinfo.value.code


def test_agent_cli_enrolls_and_attests_trusted(env: Env, make_node: object) -> None:
    node = make_node()  # type: ignore[operator]
    common = [
        "--tcti", node.tpm.tcti, "--state-dir", str(node.config.state_dir),
        "--eventlog", str(node.tpm.eventlog), "--node", node.config.node,
        "--verifier", env.url, "--json",
    ]  # fmt: skip
    enrolled = subprocess.run(
        [sys.executable, "-m", "agent", "enroll", *common, "--token", node.config.enroll_token],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    attested = subprocess.run(
        [sys.executable, "-m", "agent", "attest", *common],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert attested.returncode == 0, attested.stderr
    assert json.loads(attested.stdout)["status"] == "trusted"
    shown = env.get(f"/v1/nodes/{node.config.node}").json()
    assert shown["state"] == "trusted"


def test_reattestation_in_the_same_boot_omits_the_log_and_stays_trusted(
    env: Env, make_node: object
) -> None:
    node = make_node()  # type: ignore[operator]
    enroll(node.config, node.client)
    first = attest(node.config, node.client)
    digest = hashlib.sha256(SB_LOG).digest()  # echoed only to a caller who names it
    challenge = node.client.challenge(node.config.node, digest)
    assert challenge.known_event_log_sha256 == digest
    second = attest(node.config, node.client)
    assert (first.status, second.status) == ("trusted", "trusted")
    # Issue 14: an unchanged re-attestation reuses the stored verdict and is counted on the
    # boot's full record (attestation_repeats) instead of adding one.
    assert first.attestation_id == second.attestation_id


def test_log_that_does_not_match_the_tpm_is_untrusted(env: Env, make_node: object) -> None:
    grub = parse_event_log(SB_LOG).events[29]
    forged = bytes(32)
    node = make_node(  # type: ignore[operator]
        replacements={grub.index: forged}, log_only=True
    )
    enroll(node.config, node.client)
    result = attest(node.config, node.client)
    assert result.status == "untrusted"
    assert "pcr_replay_mismatch" in result.reason and "PCR4" in result.reason


def test_extra_extend_is_untrusted(env: Env, make_node: object) -> None:
    node = make_node(extra_extends=((4, HashAlg.SHA256.hash(b"bootkit")),))  # type: ignore[operator]
    enroll(node.config, node.client)
    result = attest(node.config, node.client)
    assert result.status == "untrusted"
    assert "pcr_replay_mismatch" in result.reason


def _evidence(node: Node, nonce: bytes) -> bytes:
    with Tpm(node.config.tcti) as tpm:
        ak, _ = ensure_ak(node.config, tpm)
        challenge_pcrs = {HashAlg.SHA256: (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14)}
        evidence = collect_evidence(node.config, tpm, ak, nonce, challenge_pcrs)
    return encode_bundle(evidence)


def test_wrong_nonce_is_refused(env: Env, make_node: object) -> None:
    node = make_node()  # type: ignore[operator]
    enroll(node.config, node.client)
    node.client.challenge(node.config.node)
    with pytest.raises(VerifierRefused) as info:
        node.client.submit(node.config.node, _evidence(node, b"\x01" * 32))
    assert _refusal(info) == "nonce_unknown"


def test_reused_nonce_is_refused(env: Env, make_node: object) -> None:
    node = make_node()  # type: ignore[operator]
    enroll(node.config, node.client)
    nonce = node.client.challenge(node.config.node).nonce
    bundle = _evidence(node, nonce)
    assert node.client.submit(node.config.node, bundle).status == "trusted"
    with pytest.raises(VerifierRefused) as info:
        node.client.submit(node.config.node, bundle)
    assert _refusal(info) == "nonce_reused"


def test_expired_nonce_is_refused(env: Env, make_node: object) -> None:
    node = make_node()  # type: ignore[operator]
    enroll(node.config, node.client)
    nonce = node.client.challenge(node.config.node).nonce
    bundle = _evidence(node, nonce)
    time.sleep(NONCE_LIFETIME + 0.5)
    with pytest.raises(VerifierRefused) as info:
        node.client.submit(node.config.node, bundle)
    assert _refusal(info) == "nonce_expired"


def test_quote_from_another_tpm_is_refused(env: Env, make_node: object) -> None:
    a = make_node()  # type: ignore[operator]
    b = make_node()  # type: ignore[operator]
    enroll(a.config, a.client)
    nonce = a.client.challenge(a.config.node).nonce
    # B's TPM quotes A's nonce with B's AK; the verifier checks it with A's enrolled AK.
    b_as_a = replace(b.config, node=a.config.node)
    with pytest.raises(VerifierRefused) as info:
        a.client.submit(a.config.node, _evidence(Node(b.tpm, b_as_a, b.client), nonce))
    assert _refusal(info) == "bad_signature"


def test_evidence_for_another_node_is_refused(env: Env, make_node: object) -> None:
    a = make_node()  # type: ignore[operator]
    b = make_node()  # type: ignore[operator]
    enroll(a.config, a.client)
    enroll(b.config, b.client)
    nonce = b.client.challenge(b.config.node).nonce
    with pytest.raises(VerifierRefused) as info:
        b.client.submit(b.config.node, _evidence(a, nonce))  # a bundle naming node A, sent as B
    assert _refusal(info) == "node_mismatch"


def test_reenrolling_a_name_with_another_ek_is_refused(env: Env, make_node: object) -> None:
    a = make_node()  # type: ignore[operator]
    enroll(a.config, a.client)
    other_tpm = swtpm.provision(env.base / f"other-{a.config.node}" / "tpm", env.base / "ca")
    impostor = make_node(name=a.config.node)  # type: ignore[operator]
    swtpm.stop(impostor.tpm)
    started = swtpm.start(other_tpm, startup=True)
    try:
        config = replace(impostor.config, tcti=started.tcti)
        with pytest.raises(VerifierRefused) as info:
            enroll(config, impostor.client)
        assert _refusal(info) == "ek_mismatch"
    finally:
        swtpm.stop(started)


def test_revoking_the_golden_set_makes_the_node_untrusted_without_new_evidence(
    env: Env, make_node: object
) -> None:
    """Two versions of a set in force (a rollout); revoking one leaves the node trusted by the
    other; revoking both flags it at once, with the reason, from its stored evidence."""
    vlog = assume_quoted_for_review(parse_event_log(SB_LOG), HashAlg.SHA256)
    for version in ("1", "2"):
        path = env.base / f"rollout-v{version}.yaml"
        path.write_text(dump_yaml(capture(vlog, name="rollout", version=version)))
        env.cli("golden", "add", str(path))
    env.cli("golden", "assign", "rollout", "--selector", "group=rollout")
    node = make_node(group="rollout")  # type: ignore[operator]
    enroll(node.config, node.client)
    assert attest(node.config, node.client).status == "trusted"
    env.cli("golden", "revoke", "rollout", "1", "--reason", "CVE-2026-0001 in this firmware")
    # Still trusted by version 2: the re-appraisal of the stored evidence says so (read from the
    # timeline, since the 6 s freshness window may run out during the CLI calls on a loaded
    # machine, and a stale node reads as stale whatever its verdict).
    latest = env.get(f"/v1/nodes/{node.config.node}/attestations?limit=1").json()
    (entry,) = latest["attestations"]
    assert (entry["source"], entry["status"]) == ("reappraisal", "trusted")
    assert "rollout@2" in entry["golden"] and "rollout@1" not in entry["golden"]
    env.cli("golden", "revoke", "rollout", "2", "--reason", "CVE-2026-0002 in this kernel")
    shown = env.get(f"/v1/nodes/{node.config.node}").json()
    assert shown["state"] == "untrusted"
    assert "CVE-2026-0001" in shown["reason"] and "CVE-2026-0002" in shown["reason"]


def test_silence_past_the_freshness_window_is_stale(env: Env, make_node: object) -> None:
    node = make_node()  # type: ignore[operator]
    enroll(node.config, node.client)
    assert attest(node.config, node.client).status == "trusted"
    time.sleep(FRESHNESS + 0.5)
    assert env.get(f"/v1/nodes/{node.config.node}").json()["state"] == "stale"
    stale = env.get("/v1/nodes?state=stale").json()["nodes"]
    assert node.config.node in {n["name"] for n in stale}
