"""Cluster-integration figures (not tests): EAR issue and verify time, the extender's filter.

    python scripts/_bench_cluster.py [--json] [--nodes 5000] [--runs 500]

In process, SQLite in a temporary directory: ``ear.issue`` (read the node, build the claims,
ES256-sign) and ``verify_ear`` (parse, ES256-verify, check); the extender's filter over
``--nodes`` node names, both the judging alone and the whole request through the Flask app
(JSON in, judge, JSON out); percentiles over ``--runs`` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verifier.ear import verify_ear
from verifier.service import ServiceConfig, create_app, ear, ear_keys
from verifier.service.standings import standings
from verifier.store import Store, upgrade
from verifier.store.models import Node


def timed(fn: Callable[[], Any], runs: int) -> dict[str, float]:
    """Wall-clock and CPU (this thread's) percentiles in ms: on a shared machine the CPU figure
    is the work itself, the wall figure adds waiting for the cores."""
    for _ in range(min(50, runs)):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    out: dict[str, float] = {}
    for name, xs in (("wall", wall), ("cpu", cpu)):
        xs.sort()
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            out[f"{name}_{label}_ms"] = round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 3)
    return out


def fill(store: Store, count: int, now: dt.datetime) -> list[str]:
    names = [f"node-{i:05d}" for i in range(count)]
    with store.write() as db:
        for i, name in enumerate(names):
            db.add(
                Node(
                    name=name, ek_public=b"ek", ek_fingerprint=f"{i:064x}", ak_public=b"ak",
                    ak_name=b"n", labels={}, state="trusted" if i % 2 == 0 else "untrusted",
                    state_since=now, reason="bench", enrolled_at=now, golden_versions=["g@1"],
                    last_success_at=now,
                )
            )  # fmt: skip
    return names


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "v.db")
        store = Store(db)
        upgrade(store)
        now = dt.datetime.now(dt.UTC)
        names = fill(store, args.nodes, now)
        app = create_app(ServiceConfig(database=db, extender_enabled=True), store=store)
        svc = app.extensions["assay"]
        ear_keys.keyring(svc)
        token = ear.issue(svc, names[0]).token
        jwks = ear_keys.keyring(svc, fresh=True)
        from verifier.ear.token import load_jwks

        keys = load_jwks(jwks.jwks())
        out = {
            "ear_issue": timed(lambda: ear.issue(svc, names[0]), args.runs),
            "ear_verify": timed(lambda: verify_ear(token, keys, now=int(time.time())), args.runs),
            "ear_bytes": len(token),
        }
        known = standings(svc)
        stamp = now.timestamp()
        out["extender_judge"] = timed(lambda: known.judge(names, stamp), args.runs)
        client = app.test_client()
        body = json.dumps({"Pod": {}, "NodeNames": names})

        def request() -> None:
            resp = client.post("/k8s/extender/filter", data=body, content_type="application/json")
            assert resp.status_code == 200

        out["extender_filter_request"] = timed(request, args.runs)
        out["nodes"] = args.nodes
        store.close()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for key, value in out.items():
            print(f"{key:26} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
