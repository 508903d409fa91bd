"""The scheduler extender (k8s.io/kube-scheduler/extender/v1) over the real app: both
nodeCacheCapable modes, fail closed for untrusted, stale, unknown and hostile names."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_service_api import T0, Env, add_node, make_env

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "default"}}


def v1_node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = make_env(str(tmp_path / "v.db"), extender_enabled=True)
    add_node(e.store, "good", state="trusted", success=T0 - dt.timedelta(seconds=10))
    add_node(e.store, "silent", state="trusted", success=T0 - dt.timedelta(seconds=181))
    add_node(e.store, "bad", state="untrusted")
    add_node(e.store, "held", state="quarantined")
    try:
        yield e
    finally:
        e.store.close()


def post(env: Env, verb: str, body: Any) -> Any:
    resp = env.client.post(
        f"/k8s/extender/{verb}", data=json.dumps(body), content_type="application/json"
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.json


NAMES = ["good", "silent", "bad", "held", "n1", "ghost"]


def test_filter_with_node_names_passes_only_trusted_fresh_nodes(env: Env) -> None:
    out = post(env, "filter", {"Pod": POD, "NodeNames": NAMES})
    assert out["NodeNames"] == ["good"] and out["Nodes"] is None
    assert set(out["FailedAndUnresolvableNodes"]) == set(NAMES) - {"good"}
    assert out["FailedNodes"] == {} and out["Error"] == ""
    reasons = out["FailedAndUnresolvableNodes"]
    assert reasons["silent"].startswith("stale") and reasons["ghost"].startswith("unknown to Assay")
    assert reasons["bad"].startswith("untrusted") and reasons["held"].startswith("quarantined")


def test_a_refusal_names_the_reason_code_never_the_approved_values(env: Env) -> None:
    from verifier.store.models import Node

    with env.store.write() as db:
        node = db.query(Node).filter_by(name="bad").one()
        node.reason = "cmdline_not_approved: PCR8 event 45: got 'nokaslr', expected 'quiet'"
    out = post(env, "filter", {"Pod": POD, "NodeNames": ["bad"]})
    assert out["FailedAndUnresolvableNodes"] == {"bad": "untrusted: cmdline_not_approved"}


def test_filter_with_full_nodes_returns_the_passing_node_objects(env: Env) -> None:
    nodes = {"apiVersion": "v1", "kind": "NodeList", "items": [v1_node(n) for n in NAMES]}
    out = post(env, "filter", {"Pod": POD, "Nodes": nodes, "NodeNames": None})
    assert out["NodeNames"] is None
    assert out["Nodes"]["kind"] == "NodeList"
    assert out["Nodes"]["items"] == [v1_node("good")]
    assert set(out["FailedAndUnresolvableNodes"]) == set(NAMES) - {"good"}


def test_prioritize_scores_trusted_nodes_highest(env: Env) -> None:
    out = post(env, "prioritize", {"Pod": POD, "NodeNames": ["good", "bad", "ghost"]})
    assert out == [
        {"Host": "good", "Score": 10},
        {"Host": "bad", "Score": 0},
        {"Host": "ghost", "Score": 0},
    ]


def test_a_node_turns_stale_at_the_end_of_its_window_without_any_event(env: Env) -> None:
    assert post(env, "filter", {"Pod": POD, "NodeNames": ["good"]})["NodeNames"] == ["good"]
    env.clock[0] = T0 + dt.timedelta(seconds=171)
    out = post(env, "filter", {"Pod": POD, "NodeNames": ["good"]})
    assert out["NodeNames"] == [] and out["FailedAndUnresolvableNodes"]["good"].startswith("stale")


def test_a_quarantine_fails_the_filter_on_the_next_request(env: Env) -> None:
    assert post(env, "filter", {"Pod": POD, "NodeNames": ["good"]})["NodeNames"] == ["good"]
    env.client.post("/v1/nodes/good/quarantine", headers=env.h("admin"), json={"reason": "t"})
    assert post(env, "filter", {"Pod": POD, "NodeNames": ["good"]})["NodeNames"] == []


def test_a_deleted_node_fails_the_filter(env: Env) -> None:
    post(env, "filter", {"Pod": POD, "NodeNames": ["good"]})
    env.client.delete("/v1/nodes/good", headers=env.h("admin"), json={"reason": "t"})
    out = post(env, "filter", {"Pod": POD, "NodeNames": ["good"]})
    assert out["NodeNames"] == [] and "good" in out["FailedAndUnresolvableNodes"]


@pytest.mark.parametrize(
    "name", ["g\u043eod", "good\x00", "GOOD", "good ", "\u202egood", "x" * 300, ""]
)
def test_hostile_names_never_pass(env: Env, name: str) -> None:
    out = post(env, "filter", {"Pod": POD, "NodeNames": [name, "good"]})
    assert out["NodeNames"] == ["good"] and name in out["FailedAndUnresolvableNodes"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"Pod": {}}',
        b'{"NodeNames": ["a"], "Nodes": {"items": []}}',
        b'{"NodeNames": "good"}',
        b'{"NodeNames": [1, 2]}',
        b'{"Nodes": {"items": [{"metadata": {}}]}}',
        b'{"NodeNames": [NaN]}',
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_a_malformed_request_fails_closed_with_a_stable_code(env: Env, body: bytes) -> None:
    resp = env.client.post("/k8s/extender/filter", data=body, content_type="application/json")
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "malformed_json" and resp.json["Error"]
    assert not resp.json["NodeNames"] and not resp.json["Nodes"]


def test_the_extender_is_off_unless_enabled(tmp_path: Path) -> None:
    e = make_env(str(tmp_path / "v.db"))
    resp = e.client.post("/k8s/extender/filter", json={"NodeNames": ["n1"]})
    assert resp.status_code == 404
    e.store.close()


def test_filter_over_5000_node_names_makes_no_query_per_name(tmp_path: Path) -> None:
    """5,000 names judged from the standings cache: no SQL statement per name (the regression a
    fleet would feel). The speed figure itself is a benchmark (``scripts/bench-cluster``, and
    printed here), not an assertion: timings on this shared machine are noise."""
    e = make_env(str(tmp_path / "v.db"), extender_enabled=True)
    names = [f"node-{i:05d}" for i in range(5000)]
    _bulk_nodes(e, names)
    body = json.dumps({"Pod": POD, "NodeNames": names})
    for _ in range(20):  # warm the cache and the code paths
        e.client.post("/k8s/extender/filter", data=body, content_type="application/json")
    trials = []
    for _ in range(5):  # the best of five runs of 100: other work on the machine comes and goes
        cpu, wall = [], []
        for _ in range(100):
            c0, w0 = time.thread_time(), time.perf_counter()
            resp = e.client.post("/k8s/extender/filter", data=body, content_type="application/json")
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
            assert resp.status_code == 200
        cpu.sort()
        wall.sort()
        trials.append((cpu[98], cpu[50], wall[98], wall[50]))
    cpu99, cpu50, wall99, wall50 = min(trials)
    busy = os.getloadavg()[0] / (os.cpu_count() or 1)
    print(
        f"extender filter, 5000 names: CPU p50 {cpu50 * 1000:.2f} ms, p99 {cpu99 * 1000:.2f} ms;"
        f" wall p50 {wall50 * 1000:.2f} ms, p99 {wall99 * 1000:.2f} ms (load/core {busy:.1f})"
    )
    assert len(resp.json["NodeNames"]) == 2500
    from sqlalchemy import event

    statements: list[str] = []
    event.listen(e.store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    resp = e.client.post("/k8s/extender/filter", data=body, content_type="application/json")
    assert resp.status_code == 200 and len(resp.json["NodeNames"]) == 2500
    assert len(statements) <= 3, statements[:5]
    e.store.close()


def _bulk_nodes(env: Env, names: list[str]) -> None:
    from verifier.store.models import Node

    with env.store.write() as db:
        for i, name in enumerate(names):
            db.add(
                Node(
                    name=name,
                    ek_public=b"ek",
                    ek_fingerprint=f"{i:064x}",
                    ak_public=b"ak",
                    ak_name=b"n",
                    labels={},
                    state="trusted" if i % 2 == 0 else "untrusted",
                    state_since=T0,
                    reason="test",
                    enrolled_at=T0,
                    golden_versions=[],
                    last_success_at=T0,
                )
            )
