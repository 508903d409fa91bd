"""A node fetches its own EAR with a real TPM (swtpm): the agent's AK quotes over the verifier's
nonce (domain-separated), the verifier under gunicorn checks it — no token involved."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import pytest
import requests

from agent.errors import VerifierRefused
from agent.node import attest, enroll, own_ear
from tests.test_e2e import Env, env, make_node  # noqa: F401 - the e2e suite's fixtures
from verifier.ear import verify_ear
from verifier.ear.token import load_jwks

pytestmark = pytest.mark.swtpm


def test_the_agent_fetches_its_own_ear_with_its_tpm(env: Env, make_node: object) -> None:  # noqa: F811
    node = make_node()  # type: ignore[operator]
    enroll(node.config, node.client)
    assert attest(node.config, node.client).status == "trusted"
    common = [
        "--tcti", node.tpm.tcti, "--state-dir", str(node.config.state_dir),
        "--node", node.config.node, "--verifier", env.url, "--json",
    ]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "agent", "ear", *common], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    token = json.loads(out.stdout)["ear"]
    jwks = load_jwks(requests.get(f"{env.url}/v1/keys", timeout=10).json())
    result = verify_ear(token, jwks, now=int(time.time()), node=node.config.node)
    assert result.affirming


def test_another_tpm_cannot_fetch_a_nodes_ear(env: Env, make_node: object) -> None:  # noqa: F811
    victim, intruder = make_node(), make_node()  # type: ignore[operator]
    enroll(victim.config, victim.client)
    enroll(intruder.config, intruder.client)
    posing = dataclasses.replace(intruder.config, node=victim.config.node)
    with pytest.raises(VerifierRefused) as err:
        own_ear(posing, intruder.client)
    assert err.value.code == "node_auth_failed" and err.value.status == 401
