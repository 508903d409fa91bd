"""One pipeline, end to end in process: real quotes (a software AK over a real log's PCRs) make
a node trusted; revoking its golden kernel writes the revocation and the node's change to the
feed in the same transaction, its EAR turns contraindicated and the extender filters it out."""

from __future__ import annotations

import json
from pathlib import Path

from testkit.service import FakeAgentForLoad
from tests.test_service_api import SB_LOG, T0, Env, golden_yaml, make_env
from verifier.ear import EarStatus, verify_ear
from verifier.ear.token import load_jwks


def attest(env: Env, agent: FakeAgentForLoad) -> dict[str, object]:
    nonce = bytes.fromhex(env.client.post(f"/v1/nodes/{agent.name}/challenge").json["nonce"])
    resp = env.client.post(
        f"/v1/nodes/{agent.name}/evidence",
        data=agent.evidence(nonce),
        headers={"Content-Type": "application/cbor"},
    )
    assert resp.status_code == 200, resp.json
    body: dict[str, object] = resp.json
    return body


def test_a_revocation_flows_to_the_feed_the_ear_and_the_extender(tmp_path: Path) -> None:
    env = make_env(str(tmp_path / "v.db"), extender_enabled=True)
    admin = env.h("admin")
    text = golden_yaml("fleet", "1")
    up = env.client.post(
        "/v1/golden", data=text, headers={**admin, "Content-Type": "application/yaml"}
    )
    assert up.status_code == 201
    assign = {"golden": "fleet", "selector": {"pool": "web"}}
    assert env.client.post("/v1/golden/assignments", headers=admin, json=assign).status_code == 200
    agent = FakeAgentForLoad("web-1", SB_LOG.read_bytes(), labels={"pool": "web"})
    agent.enroll_directly(env.store)
    assert attest(env, agent)["status"] == "trusted"

    feed = env.client.get("/v1/events?after=0", headers=env.h("scheduler")).json
    (first,) = [e for e in feed["events"] if e["node"] == "web-1"]
    assert (first["old_state"], first["new_state"]) == ("enrolled", "trusted")
    after = feed["last_seq"]

    names = {"Pod": {}, "NodeNames": ["web-1"]}
    assert env.client.post("/k8s/extender/filter", json=names).json["NodeNames"] == ["web-1"]
    jwks = load_jwks(env.client.get("/v1/keys").json)
    token = env.client.get("/v1/nodes/web-1/ear", headers=env.h("scheduler")).get_data(as_text=True)
    trusted = verify_ear(token, jwks, now=int(T0.timestamp()), node="web-1")
    assert trusted.affirming and trusted.claims.submods["boot"].policy_ids == ("fleet@1",)

    revoke = env.client.post("/v1/golden/fleet/1/revoke", headers=admin, json={"reason": "CVE"})
    assert revoke.status_code == 200, revoke.json
    feed = env.client.get(f"/v1/events?after={after}", headers=env.h("scheduler")).json
    kinds = [(e["type"], e.get("node")) for e in feed["events"]]
    assert kinds == [("golden.status_changed", None), ("node.state_changed", "web-1")]
    change = feed["events"][1]
    assert change["new_state"] == "untrusted" and change["reason"].startswith("golden_revoked")
    assert feed["events"][0]["golden"] == "fleet@1" and feed["events"][0]["status"] == "revoked"

    token = env.client.get("/v1/nodes/web-1/ear", headers=env.h("scheduler")).get_data(as_text=True)
    result = verify_ear(token, jwks, now=int(T0.timestamp()), node="web-1")
    assert result.claims.status == EarStatus.CONTRAINDICATED
    assert result.claims.reason == "golden_revoked"
    assert result.claims.submods["boot"].vector.executables == 96

    out = env.client.post("/k8s/extender/filter", json=names).json
    assert out["NodeNames"] == [] and "golden_revoked" in out["FailedAndUnresolvableNodes"]["web-1"]
    assert json.dumps(out)  # plain JSON all the way
    env.store.close()
