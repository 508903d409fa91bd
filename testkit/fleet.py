"""The fleet simulator behind ``scripts/fleet`` (scaffolding: LOAD GENERATION ONLY).

N simulated nodes, each a ``FakeAgentForLoad`` — a software ECC P-256 key standing in for a TPM,
enrolled straight into the store; it proves nothing about a TPM — attest against K verifier
instances (gunicorn, on one database) on their interval with jitter. Phase 1: every node's
first attestation (log sent, parsed, replayed, appraised). Phase 2, for ``seconds``: steady
re-attestation with the next nonce of each answer, with reboots (half of them into the other
golden version's boot chain: a rollout), tampering (an extra PCR extend) and silent nodes mixed
in. Reported: attestations/s per kind, latency, CPU per attestation of the server processes and
of this generator separately, database bytes per unchanged re-attestation, errors, states.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import os
import random
import resource
import statistics
import time
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.yamlfmt import dump_yaml
from verifier.service import golden_ops
from verifier.service.config import ServiceConfig
from verifier.service.context import Services
from verifier.store import Store, maintenance, repo
from verifier.store.models import Node, NodeState

from .dbsize import db_bytes
from .loadhttp import Answer, Finished, Loop, Request
from .loadhttp import Client as Client  # the same, blocking, for threads (the reliability tests)
from .service import FakeAgentForLoad

CBOR = {"Content-Type": "application/cbor"}
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class FleetSpec:
    nodes: int = 10_000
    seconds: float = 60.0
    interval: float = 60.0
    jitter: float = 0.1
    reboot_rate: float = 0.002
    """Chance per attestation that the node rebooted first (half of them onto the other log)."""
    tamper_rate: float = 0.0005
    """Chance per attestation that a PCR is extended with something no golden set approves."""
    silent: float = 0.01
    """Fraction of nodes that stop attesting in phase 2 (they go stale)."""
    concurrency: int = 64
    """Requests in flight at most."""
    seed: int = 14
    tick: float = 0.005
    """Seconds between the generator's wake-ups while requests are in flight (0: at every answer
    and due node). Each wake-up of a process costs this virtual machine more CPU than the work
    it then does (cold caches), so due nodes are sent, and answers handled, at the next tick —
    a node is sent at most ``tick`` after it is due; latency is still from its send to the
    kernel's arrival time of its answer."""


def make_agents(spec: FleetSpec, logs: Sequence[bytes]) -> list[FakeAgentForLoad]:
    return [FakeAgentForLoad(f"fake-{i:06d}", logs[0]) for i in range(spec.nodes)]


def enroll_many(store: Store, agents: Sequence[FakeAgentForLoad]) -> None:
    """Insert every fake node in one transaction (load generation only)."""
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "name": a.name,
            "ek_public": a.ak.raw,
            "ek_fingerprint": hashlib.sha256(a.ak.raw).hexdigest(),
            "ak_public": a.ak.raw,
            "ak_name": a.ak.name,
            "labels": {},
            "state": NodeState.ENROLLED,
            "state_since": now,
            "reason": "fleet simulator (software key, no TPM)",
            "enrolled_at": now,
            "replace_allowed": False,
            "golden_versions": [],
        }
        for a in agents
    ]
    with store.write() as db:
        for start in range(0, len(rows), 1000):
            db.execute(insert(Node), rows[start : start + 1000])


def install_golden(svc: Services, logs: Sequence[bytes]) -> None:
    """One golden set, a version per log (both active: a rollout in progress)."""
    for i, log in enumerate(logs, 1):
        vlog = assume_quoted_for_review(parse_event_log(log), HashAlg.SHA256)
        gs = capture(vlog, name="fleet", version=str(i))
        golden_ops.upload(svc, "yaml", dump_yaml(gs).encode(), "fleet-sim")
    golden_ops.assign(svc, "fleet", {}, "fleet-sim")


@dataclass
class Tally:
    """What the generator saw (its event loop's one thread adds to it)."""

    latency: dict[str, list[float]] = field(default_factory=lambda: {"first": [], "re": []})
    kinds: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, seconds: float, error: str | None) -> None:
        if error is not None:
            self.errors[error] += 1
            return
        self.kinds[kind] += 1
        self.latency["first" if kind == "first" else "re"].append(seconds)


KEPT_NONCE_REFUSED = ("422 nonce_expired", "422 nonce_reused", "422 nonce_unknown")
Outcome = tuple[str, str | None]
"""(kind, error code or None) of one round."""


def attest(agent: FakeAgentForLoad) -> Generator[Request, Answer, Outcome]:
    """One round for ``agent`` as the real agent does it (a ``loadhttp.Round``: yields its
    requests, is sent their answers): (kind, error code or None). Kinds: ``re`` (an unchanged
    re-attestation, counted), ``reboot`` and ``full`` (a full record: a new boot, or changed
    evidence or state), ``failure`` (a verdict that is not trusted). A kept nonce that is refused
    falls back to a challenge within the round."""
    kept = agent.next_nonce is not None
    kind, err = yield from _attest(agent)
    if kept and err in KEPT_NONCE_REFUSED:
        return (yield from _attest(agent))
    return kind, err


def _attest(agent: FakeAgentForLoad) -> Generator[Request, Answer, Outcome]:
    if agent.next_nonce is None:
        status, ch = yield Request(f"/v1/nodes/{agent.name}/challenge", b"{}", JSON)
        if status != 201:
            return "full", _code(status, ch)
        nonce, send = bytes.fromhex(ch["nonce"]), True
    else:
        nonce, send = agent.next_nonce, False
    agent.next_nonce = None
    body = agent.evidence(nonce, send_log=send)
    status, out = yield Request(f"/v1/nodes/{agent.name}/evidence", body, CBOR)
    if status == 422 and _code(status, out) == "422 event_log_missing":
        return (yield from _attest(agent))
    if status != 200:
        return "re", _code(status, out)
    agent.next_nonce = bytes.fromhex(out["next_challenge"]["nonce"])
    if out.get("repeat"):
        return "re", None
    if out.get("status") != "trusted":
        return "failure", None
    return ("reboot" if out.get("reboot") else "full"), None


def _code(status: int, body: Any) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    return f"{status} {err.get('code') if isinstance(err, dict) else '?'}"


def _tally(tally: Tally, finished: list[Finished], full: str = "full") -> None:
    """Count finished rounds; a round that failed (the instance down, frozen past the timeout, or
    an answer that is not HTTP or not JSON) is an error named by its exception."""
    for _, outcome, error, seconds in finished:
        if error is not None:
            tally.add("re", seconds, error)
            continue
        kind, err = outcome
        tally.add(full if kind == "full" else kind, seconds, err)


def phase_first(
    urls: Sequence[str],
    agents: list[FakeAgentForLoad],
    spec: FleetSpec,
    tally: Tally,
    kind: str = "first",
) -> float:
    """One attestation of every node, ``concurrency`` at a time (closed loop); returns the wall
    time. A full record counts as ``kind`` (``first``: the first of each boot)."""
    queue = list(enumerate(agents))
    loop = Loop(urls, tick=spec.tick)
    start = time.perf_counter()
    try:
        while queue or loop.busy:
            while queue and loop.busy < spec.concurrency:
                i, agent = queue.pop()
                loop.start(i % len(urls), attest(agent), i)
            _tally(tally, loop.wait(None), kind)
    finally:
        loop.close()
    return time.perf_counter() - start


def _perturb(
    agent: FakeAgentForLoad, spec: FleetSpec, rng: random.Random, logs: Sequence[bytes]
) -> None:
    """Events of a fleet: a reboot (maybe into the other kernel), or tampering."""
    roll = rng.random()
    if roll < spec.reboot_rate:
        if rng.random() < 0.5 and len(logs) > 1:
            other = logs[1] if agent.log == logs[0] else logs[0]
            _switch_log(agent, other)
        agent.extra_extend = None
        agent.reboot()
    elif roll < spec.reboot_rate + spec.tamper_rate:
        agent.extra_extend = b"fleet simulator: an unapproved module"


def _switch_log(agent: FakeAgentForLoad, log: bytes) -> None:
    fresh = _LOG_VALUES.get(log)
    if fresh is None:
        fresh = _LOG_VALUES[log] = FakeAgentForLoad("values", log).pcr_values
    agent.log, agent.log_sha256, agent.pcr_values = log, hashlib.sha256(log).digest(), dict(fresh)


_LOG_VALUES: dict[bytes, dict[int, bytes]] = {}


def phase_quiet(
    urls: Sequence[str], agents: list[FakeAgentForLoad], spec: FleetSpec, tally: Tally
) -> int:
    """One round of unchanged re-attestation for the nodes that are trusted and hold a nonce
    (no events): what ``db_bytes_per_reattest`` is measured over; how many were counted."""
    quiet = [a for a in agents if a.next_nonce is not None and a.extra_extend is None]
    before = tally.kinds["re"]
    phase_first(urls, quiet, spec, tally, kind="re")
    return tally.kinds["re"] - before


def phase_steady(
    urls: Sequence[str],
    agents: list[FakeAgentForLoad],
    spec: FleetSpec,
    tally: Tally,
    logs: Sequence[bytes],
) -> float:
    """``seconds`` of attestation on each node's interval (± jitter) with events mixed in (open
    loop: a node is due at its time whatever the others' latency, and is sent then, or when one
    of the ``concurrency`` requests in flight is answered; latency counts from the send)."""
    rng = random.Random(spec.seed)
    silent = set(rng.sample(range(len(agents)), int(len(agents) * spec.silent)))
    start = time.monotonic()
    due = [
        (start + rng.uniform(0, spec.interval), i) for i in range(len(agents)) if i not in silent
    ]
    heapq.heapify(due)
    end = start + spec.seconds
    spread = spec.interval * spec.jitter
    loop = Loop(urls, tick=spec.tick)
    try:
        while (due and due[0][0] < end) or loop.busy:
            now = time.monotonic()
            while due and due[0][0] <= now and due[0][0] < end and loop.busy < spec.concurrency:
                when, i = heapq.heappop(due)
                heapq.heappush(due, (when + spec.interval + rng.uniform(-spread, spread), i))
                agent = agents[i]
                _perturb(agent, spec, rng, logs)
                loop.start(rng.randrange(len(urls)), attest(agent), i)
            following = due[0][0] if due and due[0][0] < end else None
            _tally(tally, loop.wait(following if loop.busy < spec.concurrency else None))
    finally:
        loop.close()
    return time.monotonic() - start


def process_cpu(pids: Sequence[int]) -> float:
    """CPU seconds (user + system) of these processes, their live children and the children
    they reaped (Linux /proc): a PostgreSQL backend that ended (its connection closed) or a
    gunicorn worker that was replaced keeps counting, in its parent's ``cutime``/``cstime``."""
    wanted, total = set(pids), 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid in wanted or ppid in wanted:
            total += (int(fields[11]) + int(fields[12])) / tick
        if pid in wanted:
            total += (int(fields[13]) + int(fields[14])) / tick
    return total


def cpu_probe_ms() -> float:
    """CPU milliseconds of a fixed pure-Python loop (best of three): how fast this machine runs
    Python right now. Shared virtual machines vary (seen here: 86 to 150 ms for the same loop
    within a minute), so a report carries the probe and runs are compared at similar values."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        total = 0
        for i in range(1_000_000):
            total += i * i
        best = min(best, time.process_time() - start)
    return round(best * 1000, 1)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 1)


def bytes_now(store: Store, horizon: dt.timedelta) -> int:
    """Database bytes after forgetting used nonces that will have expired ``horizon`` from now
    (what retention does once they can no longer be presented)."""
    later = dt.datetime.now(dt.UTC) + horizon
    while True:
        with store.write() as db:
            if maintenance.purge_nonces(db, later) < maintenance.NONCE_BATCH:
                break
    return db_bytes(store)


def states(store: Store, config: ServiceConfig) -> dict[str, int]:
    from verifier.service.inventory import effective_state

    now = dt.datetime.now(dt.UTC)
    with store.read() as db:
        counted = Counter(
            str(effective_state(n, now, config.freshness_window)[0]) for n in repo.list_nodes(db)
        )
    return dict(sorted(counted.items()))


def summary(
    spec: FleetSpec,
    tally: Tally,
    walls: tuple[float, float],
    steady: Counter[str],
    cpu: dict[str, float],
    bytes_per: float,
    steady_latency: list[float] | None = None,
    steady_cpu: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The report; ``steady``: the kinds counted during the steady phase alone;
    ``steady_latency``: that phase's re-attestation latencies (p50/p99 are of the nodes attesting
    on their interval; the quiet round after it runs as fast as it can, so it only queues);
    ``steady_cpu``: the CPU seconds of that phase alone, by process kind (``cpu`` is of the
    first and steady phases together)."""
    first_wall, steady_wall = walls
    total = sum(tally.kinds.values())
    re, first = tally.latency["re"], tally.latency["first"]
    if steady_latency is not None:
        re = steady_latency
    return {
        "first_per_s": round(tally.kinds["first"] / first_wall, 1) if first_wall else 0.0,
        "reattest_per_s": round(steady["re"] / steady_wall, 1) if steady_wall else 0.0,
        "steady_per_s": round(sum(steady.values()) / steady_wall, 1) if steady_wall else 0.0,
        "p50_ms": round(statistics.median(re) * 1000, 1) if re else 0.0,
        "p99_ms": percentile(re, 0.99),
        "first_p50_ms": round(statistics.median(first) * 1000, 1) if first else 0.0,
        "first_p99_ms": percentile(first, 0.99),
        "server_cpu_ms_per_attestation": round(cpu["server"] * 1000 / max(1, total), 3),
        "generator_cpu_ms_per_attestation": round(cpu["generator"] * 1000 / max(1, total), 3),
        # A separate database server's own processes (PostgreSQL); 0 for SQLite, whose work is
        # inside the server figure.
        "database_cpu_ms_per_attestation": round(cpu["database"] * 1000 / max(1, total), 3),
        "steady_cpu_ms_per_attestation": {
            k: round(v * 1000 / max(1, sum(steady.values())), 3)
            for k, v in (steady_cpu or {}).items()
        },
        "db_bytes_per_reattest": round(bytes_per, 1),
        "attestations": dict(tally.kinds),
        "steady_attestations": {k: v for k, v in steady.items() if v},
        "errors": sum(tally.errors.values()),
        "error_codes": dict(tally.errors),
    }
