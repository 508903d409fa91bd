"""Fuzz the verifier's API with schemathesis, against docs/openapi.yaml, on a real gunicorn verifier
holding real data. Test scaffolding (tests/test_api_fuzz.py bounded, ``scripts/fuzz --api`` long).

``populated_verifier(base)`` creates a database (``db init``: the bootstrap admin token), uploads
the golden set captured from a real Secure Boot log, enrolls software nodes that attest over HTTP
(trusted, one quarantined, one with an extra measurement: untrusted), makes a token of each role,
and serves it; ``fuzz(url, admin, …)`` runs ``st run`` with every check and returns the request and
failure counts read from its NDJSON event stream.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.yamlfmt import dump_yaml
from verifier.service.config import ServiceConfig
from verifier.store import Store

from .service import FakeAgentForLoad, run_server

ROOT = Path(__file__).resolve().parents[1]
SB_LOG = ROOT.parent / "shared/eventlogs/qemu-ovmf-debian12/secureboot-shim-grub-kernel.bin"
REVOKE_TOKEN = "/v1/tokens/{token_id}/revoke"  # noqa: S105 - a path, not a password
"""Fuzzed last and alone: the fuzzer finds its own admin token's id in GET /v1/tokens."""
EXCLUDED_CHECKS: dict[str, str] = {
    # Schema-valid values the API refuses on purpose (a node name that is not DNS-1123, an unknown
    # node, a golden set that does not parse): "valid per the schema" is not "acceptable".
    "positive_data_acceptance": "the schema cannot express every domain rule",
}


@dataclass(frozen=True)
class Verifier:
    url: str
    admin: str
    nodes: tuple[str, ...]


@dataclass
class FuzzResult:
    requests: int = 0
    operations: int = 0
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _db_init(db: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "verifier", "db", "init", "--database", db, "--json"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    token: str = json.loads(done.stdout)["bootstrap_token"]["token"]
    return token


def _populate(url: str, admin: str, db: str, log: bytes) -> tuple[str, ...]:
    auth = {"Authorization": f"Bearer {admin}"}
    golden = capture(
        assume_quoted_for_review(parse_event_log(log), HashAlg.SHA256), name="fleet", version="1"
    )
    with requests.Session() as http:
        http.headers.update(auth)
        http.post(f"{url}/v1/golden", data=dump_yaml(golden).encode(), timeout=60)
        http.post(f"{url}/v1/golden/assignments", json={"golden": "fleet"}, timeout=60)
        for role in ("reviewer", "scheduler", "enroll"):
            http.post(f"{url}/v1/tokens", json={"role": role}, timeout=60)
        agents = [FakeAgentForLoad(f"fuzz-node-{i}", log) for i in range(3)]
        store = Store(db)
        for agent in agents:
            agent.enroll_directly(store)
        store.close()
        agents[2].extra_extend = HashAlg.SHA256.hash(b"not in the log")
        for agent in agents:
            agent.attest(http, url)
        http.post(f"{url}/v1/nodes/fuzz-node-1/quarantine", json={"reason": "fuzz"}, timeout=60)
    return tuple(a.name for a in agents)


@contextlib.contextmanager
def populated_verifier(base: Path, *, log: bytes | None = None) -> Iterator[Verifier]:
    base.mkdir(parents=True, exist_ok=True)
    db = str(base / "verifier.db")
    admin = _db_init(db)
    # The fuzzer is one client address: a rate limit would answer most of its requests 429.
    config = ServiceConfig(database=db, workers=2, client_rate=1e6, client_burst=1e6)
    with run_server(config, log_path=base / "server.log") as url:
        nodes = _populate(url, admin, db, log or SB_LOG.read_bytes())
        yield Verifier(url, admin, nodes)


LONG_POLL = "/v1/events"


def _st_run(
    verifier: Verifier, out: Path, extra: list[str], max_examples: int, skip: tuple[str, ...] = ()
) -> FuzzResult:
    """One ``st run``: requests counted from its HAR, failures from its JSON report."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(Path(sys.executable).with_name("st")), "run", f"{verifier.url}/v1/openapi.json",
        "--checks", "all", "--exclude-checks", ",".join([*EXCLUDED_CHECKS, *skip]),
        "-H", f"Authorization: Bearer {verifier.admin}",
        "--generation-with-security-parameters", "false",
        "--max-examples", str(max_examples),
        "--report", "json,har", "--report-dir", str(out),
        "--request-timeout", "30", "--no-color", "--generation-database", "none",
        "--continue-on-failure", *extra,
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "testkit._st_hooks", "PYTHONPATH": str(ROOT)}
    # Run in the report directory: schemathesis keeps a cache in .schemathesis/ where it runs.
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600, cwd=out)
    (out / "st.log").write_text(done.stdout + done.stderr)
    result = FuzzResult()
    har = next(out.glob("har-*.json"), None)
    if har is not None:
        result.requests = len(json.loads(har.read_text())["log"]["entries"])
    summary = re.search(r"Failures:\n((?:  .+\n)+)", done.stdout)
    for line in summary.group(1).splitlines() if summary else ():
        result.failures.append(line.strip().removeprefix("❌ "))
    tested = re.search(r"Tested: (\d+)", done.stdout)
    result.operations = int(tested.group(1)) if tested else 0
    if done.returncode not in (0, 1) or har is None:
        result.errors.append(f"st run exited {done.returncode}: {done.stdout[-800:]}")
    for error in re.findall(r"🚫 (.+)", done.stdout.split("SUMMARY")[-1]):
        if "Fuzzing" not in error and "Stateful" not in error and "Examples" not in error:
            result.errors.append(error)
    return result


def fuzz(
    verifier: Verifier, out: Path, *, max_examples: int, seed: int | None = None
) -> FuzzResult:
    """Every operation but the token revocation, then that one (which may revoke the fuzzer's own
    token); every check but EXCLUDED_CHECKS. Totals of both runs."""
    common = ["--seed", str(seed)] if seed is not None else []
    # /v1/events is a long poll (up to 30 s by design): it would only trip the response-time check.
    skip = ["--exclude-path", REVOKE_TOKEN, "--exclude-path", LONG_POLL]
    first = _st_run(verifier, out / "all", [*common, *skip], max_examples)
    # The long poll on its own, allowed its 30 s wait (it waits by design) plus slack.
    poll = _st_run(
        verifier,
        out / "events",
        [*common, "--include-path", LONG_POLL, "--max-response-time", "40"],
        max_examples,
    )
    last = _st_run(
        verifier, out / "revoke", [*common, "--include-path", REVOKE_TOKEN], max_examples
    )
    runs = (first, poll, last)
    return FuzzResult(
        requests=sum(r.requests for r in runs),
        operations=sum(r.operations for r in runs),
        failures=[f for r in runs for f in r.failures],
        errors=[e for r in runs for e in r.errors],
    )
