"""Scaffolding for tests, benchmarks and the demo: a real server on a free port, a load generator.

``run_server(config)`` starts ``python -m verifier serve`` (gunicorn) on a free port, waits until
it answers, yields its URL and stops it (by its own pid) afterwards.

``FakeAgentForLoad`` is for LOAD GENERATION ONLY: it enrolls a software ECC key as a node's AK
directly in the store (no TPM, no credential activation) and signs quotes over PCR values replayed
from a real event log. It proves nothing about a TPM; correctness tests use swtpm.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cbor2
import requests
import yaml

from assay.algorithms import HashAlg
from assay.eventlog import parse_event_log, replay
from assay.evidence import Evidence, encode_evidence
from assay.tpm2 import ClockInfo
from verifier.service.config import ServiceConfig
from verifier.store import Store, repo
from verifier.store.models import Node, NodeState

from .quotes import QuoteOf, SoftwareAk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_file(config: ServiceConfig, path: Path) -> Path:
    data = {k: v for k, v in dataclasses.asdict(config).items() if k != "extra" and v is not None}
    data["pcrs"] = list(config.pcrs)
    path.write_text(yaml.safe_dump(data))
    return path


@dataclasses.dataclass(frozen=True, slots=True)
class Served:
    """A running verifier: its URL and its gunicorn master process (workers are its children)."""

    url: str
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def run_server(
    config: ServiceConfig,
    *,
    timeout: float = 30.0,
    tls_ca: Path | None = None,
    log_path: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[str]:
    """Serve ``config`` with gunicorn on a free port (the database must be upgraded).

    With ``config.tls_cert`` the URL is https; ``tls_ca`` is the CA that issued the certificate
    (default: the certificate itself, for a self-signed one). ``log_path`` receives the server's
    stderr (its log); ``preexec_fn`` runs in the child before ``exec`` (e.g. a prctl).
    """
    with serve(
        config, timeout=timeout, tls_ca=tls_ca, log_path=log_path, preexec_fn=preexec_fn
    ) as served:
        yield served.url


@contextlib.contextmanager
def serve(
    config: ServiceConfig,
    *,
    timeout: float = 30.0,
    tls_ca: Path | None = None,
    log_path: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[Served]:
    """``run_server`` that also hands out the process (to measure its CPU, or to kill it)."""
    port = free_port()
    config = dataclasses.replace(config, bind=f"127.0.0.1:{port}")
    scheme = "https" if config.tls_cert else "http"
    verify: bool | str = str(tls_ca or config.tls_cert) if config.tls_cert else True
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="assay-serve-"))
        log = stack.enter_context(open(log_path, "ab")) if log_path else None
        cfg = config_file(config, Path(tmp) / "verifier.yaml")
        proc = subprocess.Popen(
            [sys.executable, "-m", "verifier", "serve", "--config", str(cfg)],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            stderr=log,
            preexec_fn=preexec_fn,
        )
        url = f"{scheme}://127.0.0.1:{port}"
        try:
            _wait_healthy(proc, url, timeout, verify=verify)
            yield Served(url, proc)
        finally:
            proc.send_signal(signal.SIGCONT)  # a test may have stopped it
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_healthy(
    proc: subprocess.Popen[bytes], url: str, timeout: float, verify: bool | str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"verifier exited with {proc.returncode} before serving")
        try:
            if requests.get(f"{url}/healthz", timeout=1, verify=verify).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"verifier did not answer on {url} within {timeout} s")


class FakeAgentForLoad:
    """A software "TPM" for load tests: enrolled straight into the store, never via activation."""

    def __init__(
        self,
        name: str,
        log: bytes,
        *,
        bank: HashAlg = HashAlg.SHA256,
        pcrs: Sequence[int] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14),
        labels: Mapping[str, str] | None = None,
        reset_count: int = 1,
    ) -> None:
        self.name = name
        self.log = log
        self.log_sha256 = hashlib.sha256(log).digest()
        self.bank = bank
        self.labels = dict(labels or {})
        self.reset_count = reset_count
        self._ak = SoftwareAk()
        self.ak = self._ak.public
        replayed = replay(parse_event_log(log)).pcrs[bank]
        zero = bytes(bank.digest_size)
        self.pcr_values = {p: replayed.get(p, zero) for p in pcrs}
        self.extra_extend: bytes | None = None
        self.clock = 1000
        """The TPM clock (ms), advanced by every quote as a real TPM's is."""
        self.restart_count = 0
        self.next_nonce: bytes | None = None
        """The nonce the last evidence answer brought (``attest_once`` uses it)."""
        self._bundle: _BundleOf | None = None

    def reboot(self, log: bytes | None = None) -> None:
        """A new boot: the reset counter moves (the clock keeps going, as a TPM's does), measuring
        ``log`` when given (e.g. rolled forward to another kernel), else the same log again."""
        if log is not None:
            self.log = log
            self.log_sha256 = hashlib.sha256(log).digest()
            replayed = replay(parse_event_log(log)).pcrs[self.bank]
            zero = bytes(self.bank.digest_size)
            self.pcr_values = {p: replayed.get(p, zero) for p in self.pcr_values}
        self.reset_count += 1
        self.next_nonce = None

    def enroll_directly(self, store: Store) -> None:
        """Insert the node with this software AK (load generation only)."""
        now = dt.datetime.now(dt.UTC)
        with store.write() as db:
            node = repo.get_node(db, self.name)
            if node is None:
                node = Node(name=self.name, golden_versions=[])
                db.add(node)
            node.ek_public = self.ak.raw
            node.ek_fingerprint = hashlib.sha256(self.ak.raw).hexdigest()
            node.ak_public = self.ak.raw
            node.ak_name = self.ak.name
            node.labels = self.labels
            node.state, node.state_since, node.reason = NodeState.ENROLLED, now, "load test"
            node.enrolled_at = now
            node.replace_allowed = False

    def evidence(self, nonce: bytes, *, send_log: bool = True) -> bytes:
        """The CBOR bundle (``encode_evidence``'s bytes) of a fresh quote over ``nonce``;
        without the log unless ``send_log``. The fleet simulator calls this per attestation, so
        what stays the same while the PCR values do is prepared once (``_BundleOf``)."""
        values = self.pcr_values
        if self.extra_extend is not None:
            values = dict(values)
            pcr = max(values)
            values[pcr] = self.bank.hash(values[pcr] + self.extra_extend)
        key = (tuple(values.items()), self.log_sha256)
        if self._bundle is None or self._bundle.key != key:
            self._bundle = _BundleOf(key, self.name, {self.bank: values}, self.log_sha256)
        self.clock += 1000
        clock = ClockInfo(self.clock, self.reset_count, self.restart_count, True)
        attest, sig = self._ak.quote_of(self._bundle.quote, nonce, clock_info=clock)
        if send_log:  # once a boot: encoded whole (a template per node would hold its log)
            return self._bundle.encode_with(self.log, nonce, attest, sig)
        return self._bundle.encode(nonce, attest, sig)

    def attest_once(self, session: requests.Session, url: str) -> dict[str, Any]:
        """One round as a current agent does it: the kept next nonce and the log omitted when
        the verifier holds it; a challenge first only without one (or when it was refused)."""
        if self.next_nonce is None:
            return self.attest(session, url)
        body = self.evidence(self.next_nonce, send_log=False)
        self.next_nonce = None
        resp = session.post(
            f"{url}/v1/nodes/{self.name}/evidence",
            data=body,
            headers={"Content-Type": "application/cbor"},
            timeout=60,
        )
        out = self._answer(resp)
        if out["http_status"] == 422 and str(out.get("error", {}).get("code", "")) in (
            "nonce_expired",
            "nonce_reused",
            "nonce_unknown",
            "event_log_missing",
        ):
            return self.attest(session, url)
        return out

    def _answer(self, resp: requests.Response) -> dict[str, Any]:
        try:
            out: dict[str, Any] = resp.json()
        except ValueError:
            out = {"error": {"code": "not_json", "message": resp.text[:200]}}
        out["http_status"] = resp.status_code
        following = out.get("next_challenge")
        if isinstance(following, dict) and isinstance(following.get("nonce"), str):
            self.next_nonce = bytes.fromhex(following["nonce"])
        return out

    def attest(self, session: requests.Session, url: str) -> dict[str, Any]:
        """One challenge → evidence round trip over HTTP; returns the verdict JSON."""
        ch = session.post(
            f"{url}/v1/nodes/{self.name}/challenge",
            json={"event_log_sha256": self.log_sha256.hex()},
            timeout=60,
        )
        ch.raise_for_status()
        info = ch.json()
        known = info.get("known_event_log_sha256")
        body = self.evidence(bytes.fromhex(info["nonce"]), send_log=known != self.log_sha256.hex())
        resp = session.post(
            f"{url}/v1/nodes/{self.name}/evidence",
            data=body,
            headers={"Content-Type": "application/cbor"},
            timeout=60,
        )
        return self._answer(resp)


class _BundleOf:
    """``encode_evidence`` of one node's bundle without its log for given PCR values, cut around
    what each attestation changes (nonce, quote, signature): the cuts are found by encoding the
    bundle once with stand-ins for those three, so the bytes stay ``encode_evidence``'s."""

    def __init__(
        self, key: object, node: str, pcrs: dict[HashAlg, dict[int, bytes]], log_sha256: bytes
    ) -> None:
        self.key = key
        self.quote = QuoteOf.values(pcrs)
        self._node, self._pcrs, self._log_sha256 = node, pcrs, log_sha256
        stand_ins = (os.urandom(32), os.urandom(33), os.urandom(34))
        whole = encode_evidence(self._bundle(*stand_ins, None))
        parts = []
        for stand_in in stand_ins:
            before, found, whole = whole.partition(cbor2.dumps(stand_in))
            assert found, "a stand-in is not in the encoded bundle"
            parts.append(before)
        self._parts = (*parts, whole)

    def _bundle(self, nonce: bytes, attest: bytes, sig: bytes, log: bytes | None) -> Evidence:
        return Evidence(
            node=self._node, agent_version="fake-load/0", nonce=nonce, attest=attest,
            signature=sig, pcrs=self._pcrs, event_log_sha256=self._log_sha256, event_log=log,
        )  # fmt: skip

    def encode(self, nonce: bytes, attest: bytes, sig: bytes) -> bytes:
        p, dumps = self._parts, cbor2.dumps
        return b"".join((p[0], dumps(nonce), p[1], dumps(attest), p[2], dumps(sig), p[3]))

    def encode_with(self, log: bytes, nonce: bytes, attest: bytes, sig: bytes) -> bytes:
        return encode_evidence(self._bundle(nonce, attest, sig, log))


def bench_service(
    database: str, log: bytes, *, clients: int = 50, rounds: int = 5, workers: int = 2
) -> dict[str, Any]:
    """End-to-end attestations/s and latency over HTTP with ``clients`` FakeAgentForLoad threads.

    Round 1 is each node's first attestation of the boot (log sent, parsed, replayed); later rounds
    are re-attestations within the boot (log omitted, verified log reused). ``database`` must be
    upgraded; the golden set captured from ``log`` is uploaded and assigned to every node.
    """
    import statistics
    import threading

    from assay.eventlog import assume_quoted_for_review
    from golden.capture import capture
    from golden.yamlfmt import dump_yaml
    from verifier.service import golden_ops
    from verifier.service.context import Services

    config = ServiceConfig(database=database, workers=workers)
    store = Store(database)
    svc = Services(config=config, store=store)
    gs = capture(
        assume_quoted_for_review(parse_event_log(log), HashAlg.SHA256),
        name="bench",
        version=str(time.time_ns()),
    )
    golden_ops.upload(svc, "yaml", dump_yaml(gs).encode(), "bench")
    golden_ops.assign(svc, "bench", {}, "bench")
    tag = os.urandom(3).hex()
    agents = [FakeAgentForLoad(f"bench-{tag}-{i}", log) for i in range(clients)]
    for a in agents:
        a.enroll_directly(store)
    store.close()
    lat: list[list[float]] = [[] for _ in range(rounds)]
    failures: list[str] = []
    walls: list[float] = [0.0] * rounds
    with run_server(config) as url:
        for r in range(rounds):
            barrier = threading.Barrier(clients + 1)

            def run(
                agent: FakeAgentForLoad, r: int = r, barrier: threading.Barrier = barrier
            ) -> None:
                with requests.Session() as session:
                    barrier.wait()
                    t = time.perf_counter()
                    out = agent.attest(session, url)
                    lat[r].append(time.perf_counter() - t)
                    if out.get("http_status") != 200 or out.get("status") != "trusted":
                        failures.append(str(out)[:200])

            threads = [threading.Thread(target=run, args=(a,)) for a in agents]
            for t in threads:
                t.start()
            barrier.wait()
            start = time.perf_counter()
            for t in threads:
                t.join()
            walls[r] = time.perf_counter() - start

    def summary(samples: list[float], wall: float) -> dict[str, float]:
        ordered = sorted(samples)
        return {
            "attestations_per_s": round(len(samples) / wall, 1),
            "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        }

    re_samples = [x for r in lat[1:] for x in r]
    return {
        "database": database.split("://")[0] if "://" in database else "sqlite",
        "clients": clients,
        "workers": workers,
        "failures": len(failures),
        "first": summary(lat[0], walls[0]),
        "reattest": summary(re_samples, sum(walls[1:])),
    }
