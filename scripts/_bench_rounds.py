"""Attestation rounds in process (issue 14): what one request costs the service, without HTTP.

Software nodes (``FakeAgentForLoad``: load generation only, no TPM) attest through the Flask test
client against a SQLite (or ``--database``) store holding the fleet simulator's golden set:

- ``re``: an unchanged re-attestation with the nonce the previous answer brought (the steady
  state: decode, read, nonce, quote, reused verdict, one write transaction, next nonce);
- ``first``: a challenge, then evidence with the whole log (a full record of a new node).

Timed: the service's CPU (``time.process_time`` around the test client's requests; the node's own
signing is outside). Usage::

    scripts/_bench_rounds.py [--kind re|first] [--batches K] [--rounds B] [--json]
    scripts/_bench_rounds.py --kind re --callgrind [--tree /tmp/old] [--database URL1,URL2]

``--callgrind`` runs the process under ``valgrind --tool=callgrind`` with two round counts and
prints the difference per round: instructions, stable on a loaded machine where wall and CPU time
are not (here the same loop took 86 ms and 150 ms a minute apart). Those counts include the test
client and the node's signing. ``--tree`` measures another checkout (an older commit) the same way.
Figures go into notes, not tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("ASSAY_TREE") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))

CORPUS = (
    Path(__file__).resolve().parent.parent.parent / "shared" / "eventlogs" / "qemu-ovmf-debian12"
)
LOGS = ("secureboot-shim-grub-kernel.bin", "uki-systemd-stub.bin")
CBOR = {"Content-Type": "application/cbor"}


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/_bench_rounds.py", description=__doc__)
    p.add_argument("--kind", choices=("re", "first"), default="re")
    p.add_argument("--batches", type=int, default=8, help="timed batches (min and median shown)")
    p.add_argument("--rounds", type=int, default=400, help="rounds per batch")
    p.add_argument(
        "--database",
        help="SQLAlchemy URL of an empty database (default: a fresh SQLite file); with "
        "--callgrind, two of them, comma-separated (it runs the benchmark twice)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--callgrind", action="store_true", help="instructions per round (valgrind)")
    p.add_argument("--tree", help="with --callgrind: measure this checkout instead")
    return p.parse_args()


class Bench:
    def __init__(self, kind: str, nodes: int, database: str | None) -> None:
        from testkit import fleet
        from verifier.service.app import create_app
        from verifier.service.config import ServiceConfig
        from verifier.service.context import Services
        from verifier.store import Store, upgrade

        logs = [(CORPUS / name).read_bytes() for name in LOGS]
        url = database or str(Path(tempfile.mkdtemp(prefix="assay-rounds-")) / "v.db")
        self.store = Store(url)
        upgrade(self.store)
        config = ServiceConfig(
            database=url, workers=1, client_rate=1e9, client_burst=1e9, attest_interval=60.0,
            log_cache_size=4096,
        )  # fmt: skip
        fleet.install_golden(Services(config=config, store=self.store), logs)
        self.agents = fleet.make_agents(fleet.FleetSpec(nodes=nodes), logs)
        fleet.enroll_many(self.store, self.agents)
        self.client = create_app(config, store=self.store).test_client()
        self.kind = kind
        self.next = 0
        if kind == "re":
            for agent in self.agents:
                self._first(agent)

    def _first(self, agent: Any) -> float:
        took = time.process_time()
        challenge = self.client.post(f"/v1/nodes/{agent.name}/challenge", json={}).get_json()
        took = time.process_time() - took
        body = agent.evidence(bytes.fromhex(challenge["nonce"]))
        start = time.process_time()
        answer = self.client.post(f"/v1/nodes/{agent.name}/evidence", data=body, headers=CBOR)
        took += time.process_time() - start
        out = answer.get_json()
        if out.get("status") != "trusted":
            raise SystemExit(f"{agent.name}: {out}")
        agent.next_nonce = bytes.fromhex(out["next_challenge"]["nonce"])
        return took

    def _again(self, agent: Any) -> float:
        body = agent.evidence(agent.next_nonce, send_log=False)
        start = time.process_time()
        answer = self.client.post(f"/v1/nodes/{agent.name}/evidence", data=body, headers=CBOR)
        took = time.process_time() - start
        out = answer.get_json()
        if not out.get("repeat"):
            raise SystemExit(f"{agent.name}: not an unchanged re-attestation: {out}")
        agent.next_nonce = bytes.fromhex(out["next_challenge"]["nonce"])
        return took

    def rounds(self, n: int) -> float:
        """Microseconds of service CPU per round, over ``n`` rounds."""
        total = 0.0
        for _ in range(n):
            if self.kind == "re":
                total += self._again(self.agents[self.next % len(self.agents)])
            else:
                total += self._first(self.agents[self.next])
            self.next += 1
        return total / n * 1e6


def timed(args: argparse.Namespace) -> dict[str, Any]:
    nodes = 50 if args.kind == "re" else args.rounds * (args.batches + 1)
    bench = Bench(args.kind, nodes, args.database)
    bench.rounds(args.rounds)  # warm up: as many rounds as a batch
    per = [round(bench.rounds(args.rounds), 1) for _ in range(args.batches)]
    return {
        "kind": args.kind,
        "us_per_round_min": min(per),
        "us_per_round_median": sorted(per)[len(per) // 2],
        "batches": per,
    }


def callgrind(args: argparse.Namespace) -> dict[str, Any]:
    small, large = 100, 300
    urls: list[str | None] = [None, None]
    if args.database:  # each run enrolls its nodes and installs the golden set afresh
        urls = list(args.database.split(","))
        if len(urls) != 2 or not all(urls):
            raise SystemExit(
                "--callgrind runs the benchmark twice: --database needs two empty databases, "
                "URL1,URL2"
            )

    def instructions(rounds: int, database: str | None) -> int:
        out = Path(tempfile.mkdtemp(prefix="assay-cg-")) / "callgrind.out"
        env = {**os.environ, "PYTHONHASHSEED": "0", "ASSAY_TREE": args.tree or str(ROOT)}
        cmd = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
            "--kind", args.kind, "--batches", "1", "--rounds", str(rounds), "--json",
        ]  # fmt: skip
        if database:  # the client's instructions only: a database server is not counted
            cmd += ["--database", database]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:  # the run's own error, not valgrind's banner
            lines = [ln for ln in done.stderr.splitlines() if not ln.startswith("==")]
            raise SystemExit(
                f"callgrind run failed ({done.returncode}):\n" + "\n".join(lines[-20:])
            )
        totals = [ln for ln in out.read_text().splitlines() if ln.startswith("totals:")]
        return int(totals[0].split()[1])

    a, b = instructions(small, urls[0]), instructions(large, urls[1])
    extra = 2 * (large - small)  # each run warms up with as many rounds as it times
    return {
        "kind": args.kind,
        "tree": args.tree or str(ROOT),
        "instructions_per_round": (b - a) // extra,
    }


def main() -> int:
    args = _args()
    out = callgrind(args) if args.callgrind else timed(args)
    print(json.dumps(out) if args.json else "\n".join(f"{k:>24}: {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
