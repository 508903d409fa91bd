"""The node controller against FakeKubeApiserver (a fake kube-apiserver speaking real HTTP),
driven by the real official client, and a real verifier app on a local port. Every object the
controller writes is validated by the fake against the Kubernetes 1.37 schema."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry
from werkzeug.serving import make_server

from testkit.fake_kube_apiserver import FakeKubeApiserver
from tests.test_service_api import add_node
from verifier.ear import verify_ear
from verifier.ear.token import load_jwks
from verifier.k8s import loops
from verifier.k8s.controller import Controller, ControllerConfig
from verifier.k8s.kubeapi import KubeApi
from verifier.k8s.verifier_api import VerifierApi
from verifier.service import ServiceConfig, create_app
from verifier.store import Store, repo, upgrade
from verifier.store.models import Node


@dataclass
class Cluster:
    fake: FakeKubeApiserver
    store: Store
    url: str
    admin: str
    scheduler: str
    stop_verifier: Callable[[], None]
    controllers: list[Controller]

    def controller(self, identity: str = "ctl-a", **cfg: Any) -> Controller:
        kube = KubeApi(client.ApiClient(client.Configuration(host=self.fake.url)))
        options = {"resync": 30.0, "refresh_margin": 0.5, "lease_duration": 3, **cfg}
        c = Controller(
            ControllerConfig(identity=identity, **options),
            kube,
            VerifierApi(self.url, self.scheduler),
            registry=CollectorRegistry(),
        )
        self.controllers.append(c)
        loops.start(c)
        return c

    def admin_post(self, path: str) -> None:
        import requests

        resp = requests.post(
            f"{self.url}{path}",
            json={"reason": "test"},
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=5,
        )
        assert resp.status_code == 200, resp.text


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    db = str(tmp_path / "v.db")
    store = Store(db)
    upgrade(store)
    with store.write() as s:
        admin, _ = repo.create_token(s, "admin", expires_at=None, now=now())
        scheduler, _ = repo.create_token(s, "scheduler", expires_at=None, now=now())
    # A window of 4 s, so staleness can be seen within a test.
    app = create_app(ServiceConfig(database=db, attest_interval=2, freshness_factor=2), store=store)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stopped = []

    def stop_verifier() -> None:
        if not stopped:
            server.shutdown()
            server.server_close()
            stopped.append(True)

    fake = FakeKubeApiserver()
    c = Cluster(
        fake, store, f"http://127.0.0.1:{server.server_port}", admin, scheduler, stop_verifier, []
    )
    try:
        yield c
    finally:
        for ctl in c.controllers:
            ctl.stop.set()
        stop_verifier()
        fake.close()
        store.close()
    assert fake.invalid == [], fake.invalid  # nothing the controller wrote broke the schema


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.05)
    return time.monotonic() - start


def taints(fake: FakeKubeApiserver, name: str) -> dict[str, str]:
    return {t["key"]: t["effect"] for t in fake.node(name).get("spec", {}).get("taints", [])}


def labels(fake: FakeKubeApiserver, name: str) -> dict[str, str]:
    return dict(fake.node(name)["metadata"].get("labels", {}))


def condition(fake: FakeKubeApiserver, name: str) -> dict[str, Any]:
    conds = fake.node(name).get("status", {}).get("conditions", [])
    return next((c for c in conds if c["type"] == "AssayAttested"), {})


def trusted(store: Store, name: str, **kw: Any) -> None:
    add_node(store, name, state="trusted", success=now(), **kw)
    with store.write() as s:
        node = s.query(Node).filter_by(name=name).one()
        node.reason = "all 29 checks passed"
        node.golden_versions = ["debian-kernel@6.1.0-28-amd64"]


def test_a_node_unknown_to_assay_is_tainted_unattested(cluster: Cluster) -> None:
    cluster.fake.add_node("ghost")
    cluster.controller()
    eventually(lambda: "assay.io/unattested" in taints(cluster.fake, "ghost"))
    assert taints(cluster.fake, "ghost")["assay.io/unattested"] == "NoSchedule"
    assert labels(cluster.fake, "ghost")["assay.io/trusted"] == "false"
    eventually(lambda: condition(cluster.fake, "ghost").get("reason") == "NotEnrolled")
    assert condition(cluster.fake, "ghost")["status"] == "Unknown"


def test_a_trusted_node_is_labelled_annotated_and_loses_the_unattested_taint(
    cluster: Cluster,
) -> None:
    trusted(cluster.store, "web-1")
    cluster.fake.add_node(
        "web-1",
        metadata={"name": "web-1", "labels": {"team": "a"}},
        spec={
            "taints": [
                {"key": "assay.io/unattested", "value": "true", "effect": "NoSchedule"},
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            ]
        },
    )
    cluster.controller()
    eventually(lambda: labels(cluster.fake, "web-1").get("assay.io/trusted") == "true")
    eventually(lambda: condition(cluster.fake, "web-1").get("status") == "True")
    assert taints(cluster.fake, "web-1") == {"dedicated": "NoSchedule"}  # others' taint kept
    got = labels(cluster.fake, "web-1")
    assert got["team"] == "a" and got["assay.io/golden"] == "debian-kernel_6.1.0-28-amd64"
    token = cluster.fake.node("web-1")["metadata"]["annotations"]["assay.io/ear"]
    import requests

    jwks = load_jwks(requests.get(f"{cluster.url}/v1/keys", timeout=5).json())
    assert verify_ear(token, jwks, now=int(time.time()), node="web-1").affirming


def test_a_state_change_reaches_the_node_within_two_seconds(cluster: Cluster) -> None:
    trusted(cluster.store, "web-1")
    cluster.fake.add_node("web-1")
    cluster.controller()
    eventually(lambda: labels(cluster.fake, "web-1").get("assay.io/trusted") == "true")
    time.sleep(0.5)
    start = time.monotonic()
    cluster.admin_post("/v1/nodes/web-1/quarantine")
    eventually(lambda: taints(cluster.fake, "web-1").get("assay.io/untrusted") == "NoExecute", 2.0)
    took = time.monotonic() - start
    print(f"quarantine → NoExecute taint on the Node: {took * 1000:.0f} ms")
    assert labels(cluster.fake, "web-1")["assay.io/trusted"] == "false"
    eventually(lambda: condition(cluster.fake, "web-1").get("reason") == "Quarantined")
    cluster.admin_post("/v1/nodes/web-1/release")
    eventually(lambda: "assay.io/untrusted" not in taints(cluster.fake, "web-1"), 2.0)


def test_a_silent_node_is_tainted_when_its_ear_expires(cluster: Cluster) -> None:
    trusted(cluster.store, "web-1")
    cluster.fake.add_node("web-1")
    cluster.controller()
    eventually(lambda: labels(cluster.fake, "web-1").get("assay.io/trusted") == "true")
    took = eventually(
        lambda: taints(cluster.fake, "web-1").get("assay.io/untrusted") == "NoExecute", 8.0
    )
    assert took > 1.0  # not at once: at the end of the 4 s window
    assert fake_value(cluster, "web-1") == "stale"
    eventually(lambda: condition(cluster.fake, "web-1").get("reason") == "Stale")


def fake_value(cluster: Cluster, name: str) -> str:
    for t in cluster.fake.node(name).get("spec", {}).get("taints", []):
        if t["key"] == "assay.io/untrusted":
            return str(t["value"])
    return ""


def test_a_taint_someone_removed_is_put_back(cluster: Cluster) -> None:
    add_node(cluster.store, "bad", state="untrusted")
    cluster.fake.add_node("bad")
    cluster.controller()
    eventually(lambda: "assay.io/untrusted" in taints(cluster.fake, "bad"))
    cluster.fake.edit_node("bad", {"spec": {"taints": None}})
    eventually(lambda: "assay.io/untrusted" in taints(cluster.fake, "bad"))


def test_a_concurrent_writer_causes_a_conflict_that_is_retried_without_losing_its_change(
    cluster: Cluster,
) -> None:
    add_node(cluster.store, "bad", state="untrusted")
    cluster.fake.add_node("bad")
    other = {"key": "example.com/maintenance", "value": "x", "effect": "NoSchedule"}
    cluster.fake.before_next_patch = lambda: cluster.fake.edit_node(
        "bad", {"spec": {"taints": [other]}}
    )
    ctl = cluster.controller()
    eventually(lambda: "assay.io/untrusted" in taints(cluster.fake, "bad"))
    assert taints(cluster.fake, "bad")["example.com/maintenance"] == "NoSchedule"
    patches = [code for method, path, code in cluster.fake.answers if method == "PATCH"]
    assert 409 in patches, cluster.fake.answers
    eventually(lambda: ctl.errors.labels("conflict")._value.get() >= 1)


def test_api_errors_are_retried_with_backoff_and_counted(cluster: Cluster) -> None:
    add_node(cluster.store, "bad", state="untrusted")
    cluster.fake.add_node("bad")
    ctl = cluster.controller()
    time.sleep(0.3)
    cluster.fake.fail_next(4, 500)
    cluster.admin_post("/v1/nodes/bad/quarantine")
    eventually(lambda: fake_value(cluster, "bad") == "quarantined", 15)
    total = sum(
        m.value
        for metric in ctl.errors.collect()
        for m in metric.samples
        if m.name.endswith("_total")
    )
    assert total >= 1


def test_an_unreachable_verifier_never_leaves_a_node_trusted(cluster: Cluster) -> None:
    trusted(cluster.store, "web-1")
    cluster.fake.add_node("web-1")
    cluster.controller()
    eventually(lambda: labels(cluster.fake, "web-1").get("assay.io/trusted") == "true")
    cluster.stop_verifier()
    eventually(lambda: labels(cluster.fake, "web-1").get("assay.io/trusted") == "false", 15)
    assert taints(cluster.fake, "web-1")["assay.io/untrusted"] == "NoSchedule"  # no eviction
    eventually(lambda: condition(cluster.fake, "web-1").get("reason") == "VerifierUnreachable")


def test_only_the_lease_holder_writes_and_another_replica_takes_over(cluster: Cluster) -> None:
    add_node(cluster.store, "bad", state="untrusted")
    cluster.fake.add_node("bad")
    a = cluster.controller("ctl-a")
    eventually(lambda: a.elector.is_leader())
    b = cluster.controller("ctl-b")
    time.sleep(1.5)
    assert not b.elector.is_leader()
    lease = cluster.fake.leases[("assay-system", "assay-node-controller")]
    assert lease["spec"]["holderIdentity"] == "ctl-a"
    a.stop.set()  # the leader goes away without releasing
    eventually(lambda: b.elector.is_leader(), 10)
    cluster.admin_post("/v1/nodes/bad/quarantine")
    eventually(lambda: fake_value(cluster, "bad") == "quarantined", 5)
    lease = cluster.fake.leases[("assay-system", "assay-node-controller")]
    assert lease["spec"]["holderIdentity"] == "ctl-b" and lease["spec"]["leaseTransitions"] == 1


def test_the_controller_patches_with_strategic_merge_only(cluster: Cluster) -> None:
    add_node(cluster.store, "bad", state="untrusted")
    cluster.fake.add_node("bad")
    cluster.controller()
    eventually(lambda: "assay.io/untrusted" in taints(cluster.fake, "bad"))
    patches = {ctype for method, _, ctype in cluster.fake.requests if method == "PATCH"}
    assert patches == {"application/strategic-merge-patch+json"}


def test_the_node_name_can_come_from_a_label(cluster: Cluster) -> None:
    trusted(cluster.store, "tpm-host-7")
    cluster.fake.add_node(
        "ip-10-0-0-7", metadata={"name": "ip-10-0-0-7", "labels": {"assay.io/node": "tpm-host-7"}}
    )
    cluster.controller(node_name_label="assay.io/node")
    eventually(lambda: labels(cluster.fake, "ip-10-0-0-7").get("assay.io/trusted") == "true")


def test_the_node_name_can_come_from_an_annotation(cluster: Cluster) -> None:
    trusted(cluster.store, "tpm-host-8")
    meta = {"name": "ip-10-0-0-8", "annotations": {"example.com/assay-name": "tpm-host-8"}}
    cluster.fake.add_node("ip-10-0-0-8", metadata=meta)
    cluster.controller(node_name_annotation="example.com/assay-name")
    eventually(lambda: labels(cluster.fake, "ip-10-0-0-8").get("assay.io/trusted") == "true")
    cluster.admin_post("/v1/nodes/tpm-host-8/quarantine")  # the feed names the Assay node
    eventually(lambda: fake_value(cluster, "ip-10-0-0-8") == "quarantined", 5)


def test_the_command_runs_the_controller_from_a_kubeconfig(
    cluster: Cluster, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys

    import yaml

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": cluster.fake.url}}],
                "users": [{"name": "ctl", "user": {}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "ctl"}}],
                "current-context": "fake",
            }
        )
    )
    token = tmp_path / "token"
    token.write_text(cluster.scheduler)
    add_node(cluster.store, "bad", state="untrusted")
    cluster.fake.add_node("bad")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "verifier", "k8s-controller", "--verifier", cluster.url,
            "--token-file", str(token), "--kubeconfig", str(kubeconfig), "--identity", "cli",
        ],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        eventually(lambda: "assay.io/untrusted" in taints(cluster.fake, "bad"), 30)
        lease = cluster.fake.leases[("assay-system", "assay-node-controller")]
        assert lease["spec"]["holderIdentity"] == "cli"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_a_forged_ear_annotation_is_never_believed(cluster: Cluster) -> None:
    """A kubelet may write its own Node's annotations: a self-made "EAR" with a far expiry must
    not keep the node trusted through a verifier outage."""
    trusted(cluster.store, "web-1")
    cluster.fake.add_node("web-1")
    ctl = cluster.controller()
    eventually(lambda: labels(cluster.fake, "web-1").get("assay.io/trusted") == "true")
    from joserfc import jwt
    from joserfc.jwk import ECKey

    real = cluster.fake.node("web-1")["metadata"]["annotations"]["assay.io/ear"]
    kid = json.loads(base64.urlsafe_b64decode(real.split(".")[0] + "=="))["kid"]
    claims = jwt.decode(real, ctl.verifier.jwks()).claims
    forged = jwt.encode(
        {"alg": "ES256", "kid": kid},
        {**claims, "exp": int(time.time()) + 10**6},
        ECKey.generate_key("P-256"),
    )
    cluster.fake.edit_node("web-1", {"metadata": {"annotations": {"assay.io/ear": forged}}})
    cluster.stop_verifier()
    eventually(lambda: labels(cluster.fake, "web-1").get("assay.io/trusted") == "false", 15)
    assert taints(cluster.fake, "web-1")["assay.io/untrusted"] == "NoSchedule"
