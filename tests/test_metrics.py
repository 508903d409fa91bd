"""GET /metrics: Prometheus text, access by token or separate bind, counters that add up across
gunicorn workers (multiprocess mode), gauges read from the database."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
import requests

from testkit.service import FakeAgentForLoad, free_port, run_server
from tests.conftest import CORPUS
from tests.test_service_api import T0, Env, add_node, make_env
from verifier.service.config import ServiceConfig
from verifier.store import Store, upgrade

SB_LOG = CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin"
TOKEN = "metrics-token-for-tests"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = make_env(str(tmp_path / "v.db"), metrics_token=TOKEN)
    try:
        yield e
    finally:
        e.store.close()


def scrape(env: Env) -> str:
    resp = env.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    return resp.get_data(as_text=True)


def value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    assert match, f"{sample} not in metrics"
    return float(match.group(1))


def test_metrics_need_the_token(env: Env) -> None:
    assert env.client.get("/metrics").status_code == 401
    bad = env.client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json["error"]["code"] == "unauthenticated"


def test_metrics_are_refused_when_not_configured(tmp_path: Path) -> None:
    e = make_env(str(tmp_path / "v.db"))
    resp = e.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 403 and resp.json["error"]["code"] == "metrics_not_configured"
    e.store.close()


def test_nodes_by_state_are_read_from_the_store(env: Env) -> None:
    add_node(env.store, "t1", state="trusted", success=T0)
    add_node(env.store, "old", state="trusted", success=T0.replace(year=2025))
    add_node(env.store, "u1", state="untrusted")
    text = scrape(env)
    assert value(text, 'assay_nodes{state="trusted"}') == 1
    assert value(text, 'assay_nodes{state="stale"}') == 1
    assert value(text, 'assay_nodes{state="untrusted"}') == 1
    assert value(text, 'assay_nodes{state="enrolled"}') == 1  # n1


def test_verdicts_and_nonce_refusals_are_counted_by_status_and_reason(env: Env) -> None:
    agent = FakeAgentForLoad("agent-1", SB_LOG.read_bytes())
    agent.enroll_directly(env.store)
    nonce = bytes.fromhex(env.client.post("/v1/nodes/agent-1/challenge").json["nonce"])
    body = agent.evidence(nonce)
    headers = {"Content-Type": "application/cbor"}
    first = env.client.post("/v1/nodes/agent-1/evidence", data=body, headers=headers)
    assert first.status_code == 200
    again = env.client.post("/v1/nodes/agent-1/evidence", data=body, headers=headers)
    assert again.json["error"]["code"] == "nonce_reused"
    text = scrape(env)
    status = first.json["status"]
    code = first.json["reason"].split(":")[0]
    assert value(text, f'assay_attestations_total{{reason="{code}",status="{status}"}}') == 1
    assert value(text, 'assay_nonce_refusals_total{reason="nonce_reused"}') == 1
    assert value(text, "assay_appraisal_duration_seconds_count") == 1
    assert "assay_http_request_duration_seconds_bucket" in text
    assert cbor2  # the evidence is CBOR: decoded by the service, not here


def test_counters_add_up_across_gunicorn_workers(tmp_path: Path) -> None:
    db = str(tmp_path / "v.db")
    store = Store(db)
    upgrade(store)
    store.close()
    config = ServiceConfig(database=db, workers=2, metrics_token=TOKEN)
    sample = 'assay_http_requests_total{endpoint="healthz",method="GET",status="200"}'
    with run_server(config) as url:
        session = requests.Session()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        before = value(session.get(f"{url}/metrics", headers=auth, timeout=5).text, sample)
        for _ in range(40):
            assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        text = session.get(f"{url}/metrics", headers=auth, timeout=5).text
        assert value(text, sample) - before == 40  # whichever of the two workers served each
        assert "assay_nodes{" in text


def test_metrics_on_a_separate_bind_need_no_token(tmp_path: Path) -> None:
    db = str(tmp_path / "v.db")
    store = Store(db)
    upgrade(store)
    store.close()
    port = free_port()
    config = ServiceConfig(database=db, workers=1, metrics_bind=f"127.0.0.1:{port}")
    with run_server(config) as url:
        requests.get(f"{url}/healthz", timeout=5)
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "assay_http_requests_total" in text and "assay_nodes{" in text
        assert requests.get(f"{url}/metrics", timeout=5).status_code == 404
        assert dataclasses.replace(config).metrics_bind
