"""Console render benchmarks behind ``scripts/bench --console``: server-side time (in-process
Flask test client, SQLite) of the node list over 10,000 nodes and of an attestation page whose
log has 1,000 events. Medians in milliseconds; figures go into notes, not tests.

The 10,000 nodes are rows written straight into the store (states, labels and golden versions
varied): the page reads them through the same domain functions as always. The attestation is a
real verified one over HTTP-shaped evidence from a software AK (FakeAgentForLoad: load only).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import statistics
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.yamlfmt import dump_yaml
from testkit.service import FakeAgentForLoad
from verifier.service import ServiceConfig, create_app, golden_ops
from verifier.store import Store, repo, upgrade
from verifier.store.models import Node, NodeState

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "eventlogs"
SB_LOG = CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin"
STATES = [NodeState.TRUSTED] * 7 + [NodeState.UNTRUSTED, NodeState.UNKNOWN, NodeState.QUARANTINED]


def _median_ms(fn: Any, runs: int) -> float:
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return round(statistics.median(samples) * 1000, 1)


def _nodes(store: Store, count: int) -> None:
    now = dt.datetime.now(dt.UTC)
    with store.write() as db:
        for i in range(count):
            state = STATES[i % len(STATES)]
            reason = (
                "all 28 checks passed"
                if state == NodeState.TRUSTED
                else (f"boot_app_not_approved: PCR4 event 44: digest {i:016x}… is not approved")
            )
            db.add(
                Node(
                    name=f"node-{i:05d}", ek_public=b"ek", ek_fingerprint=f"{i:064x}",
                    ak_public=b"ak", ak_name=i.to_bytes(4, "big"),
                    labels={"pool": f"pool-{i % 20}", "rack": f"r{i % 50}"},
                    state=state, state_since=now, reason=reason, enrolled_at=now,
                    last_attested_at=now, last_success_at=now,
                    golden_versions=[f"fleet@{1 + i % 3}"],
                )
            )  # fmt: skip


def long_log(events: int) -> bytes:
    """The corpus log with EV_IPL events appended in PCR8 until it holds ``events`` events."""
    base = SB_LOG.read_bytes()
    have = len(parse_event_log(base).events)
    out = bytearray(base)
    for i in range(events - have):
        data = f"grub_cmd: echo step {i}\x00".encode()
        out += struct.pack("<III", 8, 0x0D, 1) + struct.pack("<H", 0x0B)
        out += hashlib.sha256(data).digest() + struct.pack("<I", len(data)) + data
    return bytes(out)


class _Client:
    """FakeAgentForLoad's HTTP session, answered in-process."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def post(self, url: str, **kw: Any) -> Any:
        resp = self.client.post(url.removeprefix("http://bench"), json=kw.get("json"),
                                data=kw.get("data"), headers=kw.get("headers"))  # fmt: skip

        class Answer:
            status_code = resp.status_code

            def json(self) -> Any:
                return resp.json

            def raise_for_status(self) -> None:
                assert resp.status_code < 400, resp.text

        return Answer()


def _sign_in(client: FlaskClient, token: str) -> None:
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/ui/signin").text)
    assert csrf is not None
    client.post("/ui/signin", data={"token": token, "csrf_token": csrf.group(1)})


def bench_console(nodes: int = 10_000, events: int = 1_000, runs: int = 15) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="assay-bench-console-") as tmp:
        db = str(Path(tmp) / "v.db")
        store = Store(db)
        upgrade(store)
        with store.write() as s:
            token, _ = repo.create_token(s, "reviewer", expires_at=None)
        _nodes(store, nodes)
        app = create_app(ServiceConfig(database=db), store=store)
        svc = app.extensions["assay"]
        client = app.test_client()
        log = long_log(events)
        _sign_in(client, token)
        out: dict[str, Any] = {"nodes": nodes, "events": len(parse_event_log(log).events)}
        for label, golden_log in (("passing", log), ("failing", SB_LOG.read_bytes())):
            name = f"bench-{label}"
            gs = capture(assume_quoted_for_review(parse_event_log(golden_log), HashAlg.SHA256),
                         name=name, version="1")  # fmt: skip
            golden_ops.upload(svc, "yaml", dump_yaml(gs).encode(), "bench")
            golden_ops.assign(svc, name, {"bench": label}, "bench")
            agent = FakeAgentForLoad(f"att-{label}", log, labels={"bench": label})
            agent.enroll_directly(store)
            verdict = agent.attest(_Client(client), "http://bench")  # type: ignore[arg-type]
            att = verdict["attestation_id"]
            page = f"/ui/attestations/{att}"
            html = client.get(page).text
            assert html.count('<tr id="ev-') == out["events"], "every event is on the page"
            out[f"attestation_page_{label}_ms"] = _median_ms(lambda p=page: client.get(p), runs)
            out[f"attestation_{label}_status"] = verdict["status"]
        for path in (
            "/ui/nodes",
            "/ui/nodes?state=untrusted&sort=reason",
            "/ui/nodes?search=node-09",
        ):
            assert client.get(path).status_code == 200
            out[f"GET {path} ms"] = _median_ms(lambda p=path: client.get(p), runs)
        store.close()
        return out
