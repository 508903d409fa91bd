"""Fleet-scale figures behind ``scripts/bench --fleet`` (benchmarks, not tests):

- inventory: 100,000 nodes (90% trusted), ``GET /v1/nodes?state=trusted&limit=1000`` (first
  page) and ``?state=trusted&fields=names`` (every trusted name), medians in ms;
- revocation: a golden version used by 10,000 nodes (software keys: FakeAgentForLoad, fakes)
  revoked; seconds until every one of them is re-appraised and moved.
In process (Flask test client), on SQLite or PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit import fleet  # noqa: E402
from testkit.service import FakeAgentForLoad  # noqa: E402
from verifier.service import ServiceConfig, create_app, golden_ops  # noqa: E402
from verifier.service.context import Services  # noqa: E402
from verifier.store import Store, repo, upgrade  # noqa: E402
from verifier.store.models import Node, NodeState  # noqa: E402

LOGS = [
    (ROOT.parent / "shared/eventlogs/qemu-ovmf-debian12" / n).read_bytes()
    for n in ("secureboot-shim-grub-kernel.bin", "uki-systemd-stub.bin")
]


def _median_ms(fn: Any, runs: int) -> float:
    fn()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return round(statistics.median(samples) * 1000, 1)


def bench_inventory(url: str, nodes: int = 100_000) -> dict[str, Any]:
    store = Store(url)
    upgrade(store)
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "name": f"inv-{i:06d}",
            "ek_public": b"ek",
            "ek_fingerprint": hashlib.sha256(b"%d" % i).hexdigest(),
            "ak_public": b"ak",
            "ak_name": b"n%d" % i,
            "labels": {"pool": "a"},
            "state": NodeState.TRUSTED if i % 10 else NodeState.UNTRUSTED,
            "state_since": now,
            "reason": "bench",
            "enrolled_at": now,
            "last_success_at": now,
            "replace_allowed": False,
            "golden_versions": ["fleet@1"],
        }
        for i in range(nodes)
    ]
    with store.write() as db:
        for start in range(0, nodes, 5000):
            db.execute(insert(Node), rows[start : start + 5000])
        token, _ = repo.create_token(db, "scheduler", expires_at=None, now=now)
    app = create_app(ServiceConfig(database=url), store=store)
    client, h = app.test_client(), {"Authorization": f"Bearer {token}"}

    def page() -> None:
        resp = client.get("/v1/nodes?state=trusted&limit=1000", headers=h)
        assert resp.status_code == 200 and len(resp.json["nodes"]) == 1000

    def names() -> None:
        resp = client.get("/v1/nodes?state=trusted&fields=names", headers=h)
        assert resp.status_code == 200 and len(resp.json["names"]) == nodes * 9 // 10

    out = {"nodes": nodes, "first_page_ms": _median_ms(page, 9), "names_ms": _median_ms(names, 5)}
    store.close()
    return out


def bench_revocation(url: str, nodes: int = 10_000) -> dict[str, Any]:
    store = Store(url)
    upgrade(store)
    config = ServiceConfig(database=url, client_rate=1e9, client_burst=1e9, log_cache_size=4096)
    app = create_app(config, store=store)
    svc: Services = app.extensions["assay"]
    fleet.install_golden(svc, LOGS)
    agents = [FakeAgentForLoad(f"rev-{i:05d}", LOGS[0]) for i in range(nodes)]
    fleet.enroll_many(store, agents)
    client = app.test_client()
    for a in agents:  # every node's first attestation, in process
        ch = client.post(f"/v1/nodes/{a.name}/challenge")
        body = a.evidence(bytes.fromhex(ch.json["nonce"]))
        resp = client.post(f"/v1/nodes/{a.name}/evidence", data=body, headers=fleet.CBOR)
        assert resp.json["status"] == "trusted", resp.json
    start = time.perf_counter()
    change = golden_ops.set_status(svc, "fleet", "1", "revoked", "bench", "bench")
    seconds = time.perf_counter() - start
    moved = sum(r.state == NodeState.UNTRUSTED for r in change.reappraised)
    store.close()
    return {
        "nodes": nodes,
        "reappraised": len(change.reappraised),
        "moved": moved,
        "seconds": round(seconds, 2),
    }


def main() -> int:
    which = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    work = Path(tempfile.mkdtemp(prefix="assay-bench-fleet-"))
    out: dict[str, Any] = {}
    if which == "postgres":
        from tests.postgres import start_postgres, stop_postgres

        server = start_postgres(Path(tempfile.mkdtemp(prefix="assay-pg-")))
        try:
            out["inventory"] = bench_inventory(server.create_database())
            out["revocation"] = bench_revocation(server.create_database())
        finally:
            stop_postgres(server)
    else:
        out["inventory"] = bench_inventory(str(work / "inv.db"))
        out["revocation"] = bench_revocation(str(work / "rev.db"))
    import json
    import os

    out["database"], out["load_average"] = which, [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
