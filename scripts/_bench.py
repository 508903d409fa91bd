"""Benchmark driver behind scripts/bench. Medians in microseconds; figures go into notes, not tests."""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from assay.algorithms import HashAlg
from assay.errors import AssayError, MalformedEvidence
from assay.eventlog import parse_event_log, replay

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "eventlogs"


def _median_us(fn: Any, runs: int) -> float:
    for _ in range(min(50, runs)):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return round(statistics.median(samples) * 1e6, 1)


def bench_eventlog(path: Path, runs: int) -> dict[str, Any]:
    data = path.read_bytes()
    log = parse_event_log(data)
    bank = HashAlg.SHA256 if HashAlg.SHA256 in log.banks else log.banks[0]

    def parse_replay() -> None:
        replay(parse_event_log(data), (bank,))

    return {
        "parse_replay_us": _median_us(parse_replay, runs),
        "parse_us": _median_us(lambda: parse_event_log(data), runs),
        "events": len(log.events),
        "bank": bank.bank,
    }


def corpus_logs() -> list[Path]:
    logs = []
    for path in sorted(CORPUS.glob("*/*")):
        if path.suffix in (".json", ".yaml", ".tsv", ".md", ".b64") or path.name == "README.md":
            continue
        try:
            parse_event_log(path.read_bytes())
        except MalformedEvidence:
            continue
        logs.append(path)
    return logs


def bench_service_dbs(which: str) -> dict[str, Any]:
    """attestations/s and latency, first of a boot vs re-attestation, on SQLite and/or PostgreSQL."""
    import tempfile

    from testkit.service import bench_service
    from verifier.store import Store, upgrade

    sys.path.insert(0, str(ROOT))
    log = (CORPUS / "qemu-ovmf-debian12/secureboot-shim-grub-kernel.bin").read_bytes()
    out: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="assay-bench-"))
    if which in ("sqlite", "both"):
        url = str(work / "bench.db")
        upgrade(Store(url))
        out["sqlite"] = bench_service(url, log, clients=50, rounds=5, workers=2)
    if which in ("postgres", "both"):
        from tests.postgres import start_postgres, stop_postgres

        # Its own top-level directory: the postgres user must be able to reach it.
        server = start_postgres(Path(tempfile.mkdtemp(prefix="assay-pg-")))
        try:
            url = server.create_database()
            upgrade(Store(url))
            out["postgres"] = bench_service(url, log, clients=50, rounds=5, workers=2)
        finally:
            stop_postgres(server)
    return out


def bench_fleet_db(which: str) -> dict[str, Any]:
    """Inventory pages of 100,000 nodes and a 10,000-node revocation on SQLite or PostgreSQL."""
    import tempfile

    import _bench_fleet

    if which == "sqlite":
        work = Path(tempfile.mkdtemp(prefix="assay-bench-fleet-"))
        inventory = _bench_fleet.bench_inventory(str(work / "inv.db"))
        return {
            "inventory": inventory,
            "revocation": _bench_fleet.bench_revocation(str(work / "r.db")),
        }
    from tests.postgres import start_postgres, stop_postgres

    server = start_postgres(Path(tempfile.mkdtemp(prefix="assay-pg-")))
    try:
        return {
            "inventory": _bench_fleet.bench_inventory(server.create_database()),
            "revocation": _bench_fleet.bench_revocation(server.create_database()),
        }
    finally:
        stop_postgres(server)


def _optional(module: str, func: str) -> Any:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return None
    return getattr(importlib.import_module(module), func, None)


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("logs", nargs="*", type=Path, help="event logs (default: the whole corpus)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=2000, help="timed runs per figure (median)")
    parser.add_argument(
        "--service",
        choices=("sqlite", "postgres", "both"),
        help="also measure end-to-end attestations/s over HTTP (gunicorn, 2 workers, 50 software "
        "agents: FakeAgentForLoad, load generation only) on this database",
    )
    parser.add_argument(
        "--fleet",
        choices=("sqlite", "postgres"),
        help="also measure the inventory of 100,000 nodes and revoking a version used by 10,000 "
        "(in process; software keys as fakes: scripts/_bench_fleet.py)",
    )
    parser.add_argument(
        "--agent",
        metavar="PYTHON",
        help="also measure `agent run` (resident set, CPU per attestation) for the agent installed "
        "under this interpreter; `scripts/bench --agent` installs one with scripts/install-agent",
    )
    parser.add_argument(
        "--console",
        action="store_true",
        help="also measure the review console's server-side render times (10,000-node list, "
        "1,000-event attestation page)",
    )
    args = parser.parse_args()
    logs = [p.resolve() for p in args.logs] or corpus_logs()
    result: dict[str, Any] = {"eventlog": {}}
    for path in logs:
        key = str(path.relative_to(CORPUS)) if path.is_relative_to(CORPUS) else str(path)
        result["eventlog"][key] = bench_eventlog(path, args.runs)
    bench_quote = _optional("_bench_quote", "bench_quote")
    if bench_quote is not None:
        result["quote"] = bench_quote()
    bench_appraisal = _optional("_bench_appraisal", "bench_appraisal")
    if bench_appraisal is not None:
        result["appraisal"] = {}
        for path in logs:
            key = str(path.relative_to(CORPUS)) if path.is_relative_to(CORPUS) else str(path)
            try:
                result["appraisal"][key] = bench_appraisal(path)
            except (AssayError, ValueError) as exc:  # logs the appraisal cannot capture
                result["appraisal"][key] = {"error": str(exc)}
    if args.service:
        result["service"] = bench_service_dbs(args.service)
    if args.console:
        from _bench_console import bench_console

        result["console"] = bench_console()
    if args.fleet:
        result["fleet"] = bench_fleet_db(args.fleet)
    if args.agent:
        from _measure_agent import measure_agent

        result["agent"] = measure_agent(args.agent)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{'log':<60} {'events':>6} {'parse+replay µs':>16} {'parse µs':>9}")
    for key, row in result["eventlog"].items():
        print(f"{key:<60} {row['events']:>6} {row['parse_replay_us']:>16} {row['parse_us']:>9}")
    for section in ("quote", "appraisal", "service", "console", "fleet", "agent"):
        if section in result:
            print(f"{section}: {json.dumps(result[section])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
