"""deploy/kubernetes/: every manifest validates against Kubernetes' published 1.37 schema,
the RBAC is exactly least privilege, and the scheduler configuration points at real routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from testkit.fake_kube_apiserver import KUBE_VERSION
from tests.test_service_api import make_env

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
FILES = sorted(DEPLOY.glob("*.yaml"))


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def every_object() -> list[dict[str, Any]]:
    return [d for f in FILES for d in docs(f)]


def test_the_manifests_are_there() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in every_object()}
    assert ("DaemonSet", "assay-agent") in kinds
    assert ("Deployment", "assay-verifier") in kinds and ("Service", "assay-verifier") in kinds
    assert ("Deployment", "assay-node-controller") in kinds
    assert ("ConfigMap", "assay-scheduler-config") in kinds


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_each_manifest_validates_against_the_published_schema(path: Path) -> None:
    for doc in docs(path):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_a_broken_manifest_would_be_caught() -> None:
    (deployment,) = [d for d in docs(DEPLOY / "controller.yaml") if d["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containerz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def rules(kind: str, name: str) -> list[dict[str, Any]]:
    (role,) = [d for d in every_object() if d["kind"] == kind and d["metadata"]["name"] == name]
    return list(role["rules"])


def test_the_controller_may_only_read_and_patch_nodes_and_its_lease() -> None:
    assert rules("ClusterRole", "assay-node-controller") == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
    ]
    lease = rules("Role", "assay-node-controller-lease")
    assert all(
        r["apiGroups"] == ["coordination.k8s.io"] and r["resources"] == ["leases"] for r in lease
    )
    named = [r for r in lease if "resourceNames" in r]
    assert named == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["assay-node-controller"],
            "verbs": ["get", "update"],
        }
    ]
    verbs = {
        v
        for d in every_object()
        if d["kind"] in ("Role", "ClusterRole")
        for r in d["rules"]
        for v in r["verbs"]
    }
    assert not verbs & {"delete", "deletecollection", "*", "escalate", "bind", "impersonate"}


def test_the_agent_reads_the_event_log_read_only() -> None:
    (ds,) = docs(DEPLOY / "agent-daemonset.yaml")
    mounts = {m["name"]: m for m in ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["securityfs"]["readOnly"] is True
    paths = {v["name"]: v["hostPath"]["path"] for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert paths["tpm"] == "/dev/tpmrm0"


EXTENDER_FIELDS = {
    "urlPrefix",
    "filterVerb",
    "preemptVerb",
    "prioritizeVerb",
    "bindVerb",
    "weight",
    "enableHTTPS",
    "tlsConfig",
    "httpTimeout",
    "nodeCacheCapable",
    "managedResources",
    "ignorable",
}


def test_the_scheduler_configuration_names_the_extenders_real_routes(tmp_path: Path) -> None:
    (cm,) = docs(DEPLOY / "scheduler-extender.yaml")
    config = yaml.safe_load(cm["data"]["scheduler-config.yaml"])
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["kind"] == "KubeSchedulerConfiguration"
    (ext,) = config["extenders"]
    assert set(ext) <= EXTENDER_FIELDS and ext["ignorable"] is False
    prefix = "/" + ext["urlPrefix"].split("://", 1)[1].split("/", 1)[1]
    env = make_env(str(tmp_path / "v.db"), extender_enabled=True)
    for verb in (ext["filterVerb"], ext["prioritizeVerb"]):
        resp = env.client.post(f"{prefix}/{verb}", json={"NodeNames": ["n1"]})
        assert resp.status_code == 200, (verb, resp.json)
    env.store.close()


def test_the_verifier_config_in_the_configmap_loads(tmp_path: Path) -> None:
    from verifier.service.config import load_config

    (cm,) = [d for d in docs(DEPLOY / "verifier.yaml") if d["kind"] == "ConfigMap"]
    path = tmp_path / "verifier.yaml"
    path.write_text(cm["data"]["verifier.yaml"])
    config = load_config(str(path), env={})
    assert config.extender_enabled and config.metrics_bind == "0.0.0.0:9700"
