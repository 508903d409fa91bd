"""Driver behind scripts/fleet: a fleet of software nodes (fakes, no TPM) against K verifier
instances on one database; prints a report, and with --json one JSON object last."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit import fleet  # noqa: E402
from testkit.service import serve  # noqa: E402
from verifier.service.config import ServiceConfig  # noqa: E402
from verifier.service.context import Services  # noqa: E402
from verifier.store import Store, upgrade  # noqa: E402

CORPUS = ROOT.parent / "shared" / "eventlogs" / "qemu-ovmf-debian12"
LOGS = ("secureboot-shim-grub-kernel.bin", "uki-systemd-stub.bin")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/fleet", description=__doc__)
    p.add_argument("--json", action="store_true", help="print one JSON object, last")
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=60.0, help="length of the steady phase")
    p.add_argument("--interval", type=float, default=60.0, help="each node's attest interval")
    p.add_argument(
        "--database", help="SQLAlchemy URL or SQLite path; 'postgres' starts a private one"
    )
    p.add_argument("--instances", type=int, default=1, help="verifier instances (gunicorn each)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight at most")
    p.add_argument(
        "--tick", type=float, default=fleet.FleetSpec().tick,
        help="seconds between the generator's wake-ups (0: at every answer)",
    )  # fmt: skip
    return p.parse_args()


@contextlib.contextmanager
def _database(arg: str | None, work: Path) -> Any:
    """(URL, the database server's pids: its CPU is counted apart; none for SQLite, which runs
    inside the verifier)."""
    if arg != "postgres":
        yield arg or str(work / "fleet.db"), []
        return
    sys.path.insert(0, str(ROOT))
    from tests.postgres import start_postgres, stop_postgres

    server = start_postgres(Path(tempfile.mkdtemp(prefix="assay-pg-")))
    try:
        postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
        yield server.create_database(), [postmaster]
    finally:
        stop_postgres(server)


def main() -> int:
    args = _args()
    spec = fleet.FleetSpec(
        nodes=args.nodes, seconds=args.seconds, interval=args.interval,
        concurrency=args.concurrency, tick=args.tick,
    )  # fmt: skip
    logs = [(CORPUS / name).read_bytes() for name in LOGS]
    work = Path(tempfile.mkdtemp(prefix="assay-fleet-"))
    with _database(args.database, work) as (url, db_pids):
        probe = fleet.cpu_probe_ms()
        store = Store(url)
        upgrade(store)
        config = ServiceConfig(
            database=url, workers=args.workers, client_rate=1e9, client_burst=1e9,
            attest_interval=max(args.interval, 60.0), log_cache_size=4096,
        )  # fmt: skip
        fleet.install_golden(Services(config=config, store=store), logs)
        agents = fleet.make_agents(spec, logs)
        fleet.enroll_many(store, agents)
        out = run(spec, config, store, agents, logs, args.instances, db_pids)
        store.close()
    out = {"nodes": spec.nodes, "seconds": spec.seconds, "instances": args.instances, **out}
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    out["cpu_probe_ms"] = [probe, fleet.cpu_probe_ms()]  # before and after: the machine's speed
    if not args.json:
        for key, value in out.items():
            print(f"{key:>36}: {value}")
    print(json.dumps(out))
    return 1 if out["errors"] else 0


def run(
    spec: fleet.FleetSpec,
    config: ServiceConfig,
    store: Store,
    agents: list[fleet.FakeAgentForLoad],
    logs: list[bytes],
    instances: int,
    db_pids: list[int],
) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        served = [stack.enter_context(serve(config)) for _ in range(instances)]
        urls, pids = [s.url for s in served], [s.proc.pid for s in served]
        tally = fleet.Tally()

        def cpu_now() -> dict[str, float]:
            return {
                "server": fleet.process_cpu(pids),
                "generator": fleet.own_cpu(),
                "database": fleet.process_cpu(db_pids),
            }

        cpu0 = cpu_now()
        first_wall = fleet.phase_first(urls, agents, spec, tally)
        kinds0, re0 = fleet.Counter(tally.kinds), len(tally.latency["re"])
        cpu1 = cpu_now()
        steady_wall = fleet.phase_steady(urls, agents, spec, tally, logs)
        steady_latency = tally.latency["re"][re0:]  # the open-loop phase's, not the quiet round's
        steady = fleet.Counter(tally.kinds)
        steady.subtract(kinds0)
        cpu2 = cpu_now()
        cpu = {k: cpu2[k] - cpu0[k] for k in cpu2}
        steady_cpu = {k: cpu2[k] - cpu1[k] for k in cpu2}
        # Bytes per unchanged re-attestation: one quiet round (no events), used nonces purged.
        horizon = dt.timedelta(seconds=max(config.nonce_lifetime, config.freshness_window) + 1)
        before = fleet.bytes_now(store, horizon)
        counted = fleet.phase_quiet(urls, agents, spec, tally)
        time.sleep(0.5)
        per = (fleet.bytes_now(store, horizon) - before) / max(1, counted)
        out = fleet.summary(
            spec, tally, (first_wall, steady_wall), steady, cpu, per, steady_latency, steady_cpu
        )
        out["states"] = fleet.states(store, config)
        return out


if __name__ == "__main__":
    sys.exit(main())
