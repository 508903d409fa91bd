"""First-check benchmark (issue 14): parse, verify against a verified quote, appraise — warm and cold.

For every corpus log with at most ``--max-events`` events (125) that parses and captures, a golden set
is captured from the log and padded as ``_bench_appraisal`` does (500 dbx entries, 20 boot
applications), compiled once, and a software AK quotes the log's replayed PCR values (the service's
default selection, 0-9 and 14, plus every other PCR the log extends). One *first check* is then::

    vlog = verify_log(parse_event_log(raw), quote, bank, caches=caches)
    appraise(vlog, policy)

- **warm**: the content caches hold this firmware's events (another node with it was seen);
- **cold**: every cache keyed by event content is emptied before each call — the verifier's
  ``LogCaches``, bootfacts' ``signature_database`` / ``authority_id`` lru caches, and the compiled
  policy's memos keyed by event content or PCR values (``_remembered`` verdict checks,
  ``_unaccepted``); what the policy builds once per golden version from the golden sets alone is
  rebuilt outside the timed region. ``--cold-as-bench`` leaves the policy's memos alone (the
  definition ``scripts/_bench_appraisal.first_checks`` uses).

Quote verification (``verify_quote``: one ECDSA P-256 signature check in OpenSSL) is timed apart as
``verify_quote_us``; the service pays it before the first check (step 3 of ``submit``).

Usage::

    scripts/_bench_firstcheck.py [--runs N] [--json] [LOG...]
    scripts/_bench_firstcheck.py --compare /tmp/old [--rounds 3]   # old (PYTHONPATH) vs this tree,
                                                                   # processes alternating
    scripts/_bench_firstcheck.py --callgrind LOG [--mode cold|warm] [--iterations 200]
    scripts/_bench_firstcheck.py --breakdown LOG   # µs each content cache saves a cold check

``--callgrind`` runs the process under ``valgrind --tool=callgrind`` twice — the setup alone, and the
setup plus N first checks — and prints (difference) / N instructions per first check: stable on a
loaded machine, unlike wall time. Figures go into notes, not tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = ROOT.parent / "shared" / "eventlogs"
sys.path.insert(0, str(HERE))
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(ROOT))

from _bench_appraisal import _padded  # noqa: E402

from assay import bootfacts  # noqa: E402
from assay.algorithms import HashAlg  # noqa: E402
from assay.errors import AssayError  # noqa: E402
from assay.eventlog import LogCaches, parse_event_log, replay, verify_log  # noqa: E402
from assay.tpm2 import VerifiedQuote, verify_quote  # noqa: E402
from golden.capture import capture  # noqa: E402
from testkit.quotes import SoftwareAk  # noqa: E402
from verifier.appraisal import CompiledPolicy, appraise, compile_golden  # noqa: E402

SELECTION = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14)  # verifier/service/config.py DEFAULT_PCRS


@dataclass
class Case:
    name: str
    raw: bytes
    bank: HashAlg
    quote: VerifiedQuote
    policy: CompiledPolicy
    caches: LogCaches
    events: int
    status: str
    verify_quote_us: float


def _quoted_values(raw: bytes, bank: HashAlg) -> dict[int, bytes]:
    log = parse_event_log(raw)
    values = dict(replay(log, (bank,)).pcrs[bank])
    for pcr in SELECTION:
        values.setdefault(pcr, bytes(bank.digest_size))
    return values


def make_case(path: Path) -> Case:
    raw = path.read_bytes()
    log = parse_event_log(raw)
    bank = HashAlg.SHA256 if HashAlg.SHA256 in log.banks else log.banks[0]
    ak = SoftwareAk()
    pcrs = {bank: _quoted_values(raw, bank)}
    nonce = os.urandom(16)
    attest, sig = ak.quote(pcrs, nonce)
    quote = verify_quote(attest, sig, ak.public, nonce, pcrs)
    caches = LogCaches()
    vlog = verify_log(log, quote, bank, caches=caches)
    main_set, dbx_set = _padded(capture(vlog, name="bench", version="1"))
    policy = compile_golden([main_set, dbx_set])
    verdict = appraise(vlog, policy)
    samples = []
    for _ in range(50):
        t0 = time.perf_counter_ns()
        verify_quote(attest, sig, ak.public, nonce, pcrs)
        samples.append(time.perf_counter_ns() - t0)
    key = str(path.relative_to(CORPUS)) if path.is_relative_to(CORPUS) else str(path)
    return Case(
        key,
        raw,
        bank,
        quote,
        policy,
        caches,
        len(log.events),
        str(verdict.status),
        round(statistics.median(samples) / 1000, 1),
    )


def first_check(case: Case) -> None:
    vlog = verify_log(parse_event_log(case.raw), case.quote, case.bank, caches=case.caches)
    appraise(vlog, case.policy)


CACHES = ("coverage", "variables", "extended", "chains", "databases", "policy")
"""The content caches ``--breakdown`` leaves warm one at a time (``databases``: bootfacts' checked
signature databases; ``policy``: the compiled policy's memos; the rest are ``LogCaches``')."""


def empty_content_caches(
    case: Case, *, policy_memos: bool = True, keep: frozenset[str] = frozenset()
) -> None:
    """Every cache keyed by event content (see the module docstring), but those in ``keep``."""
    if keep:
        case.caches.clear(keep=keep)
    else:  # as an older tree under --compare can
        case.caches.clear()
    # By name: under --compare an older tree's cached function is ``signature_ids``.
    names = ("signature_database", "signature_ids", "authority_id")
    for name in names if "databases" not in keep else names[2:]:
        cached = getattr(bootfacts, name, None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()
    if policy_memos and "policy" not in keep:
        # Private memos: a benchmark of a cold start has to reach them. Golden-only tables (the
        # LoadOptions digests) are rebuilt here, outside the timed call.
        policy: Any = case.policy
        policy._remembered.clear()
        policy._unaccepted.clear()
        policy.load_options(case.bank)


def corpus_logs(max_events: int) -> list[Path]:
    out = []
    for path in sorted(CORPUS.glob("*/*")):
        if path.suffix in (".json", ".yaml", ".tsv", ".md", ".b64"):
            continue
        try:
            log = parse_event_log(path.read_bytes())
        except AssayError:
            continue
        if 2 < len(log.events) <= max_events:
            out.append(path)
    return out


def measure(case: Case, runs: int, policy_memos: bool) -> dict[str, Any]:
    """Median µs warm and cold, the two interleaved so both see the same machine load."""
    for _ in range(20):
        first_check(case)
    warm, cold = [], []
    clock = time.perf_counter_ns
    for _ in range(runs):
        t0 = clock()
        first_check(case)
        warm.append(clock() - t0)
        empty_content_caches(case, policy_memos=policy_memos)
        t0 = clock()
        first_check(case)
        cold.append(clock() - t0)
    return {
        "events": case.events,
        "bank": case.bank.bank,
        "status": case.status,
        "warm_us": round(statistics.median(warm) / 1000, 1),
        "cold_us": round(statistics.median(cold) / 1000, 1),
        "warm_min_us": round(min(warm) / 1000, 1),
        "cold_min_us": round(min(cold) / 1000, 1),
        "verify_quote_us": case.verify_quote_us,
    }


def breakdown(case: Case, runs: int) -> dict[str, Any]:
    """Where a cold check's time goes, measured in place: the cold check with one content cache
    left warm at a time, all interleaved; what leaving a cache warm saves is its share."""
    modes = {"none": frozenset[str](), **{c: frozenset((c,)) for c in CACHES}}
    took: dict[str, list[int]] = {m: [] for m in modes}
    for _ in range(20):
        first_check(case)
    clock = time.perf_counter_ns
    for _ in range(runs):
        for mode, keep in modes.items():
            empty_content_caches(case, keep=keep)
            t0 = clock()
            first_check(case)
            took[mode].append(clock() - t0)
    cold = statistics.median(took["none"]) / 1000
    return {
        "cold_us": round(cold, 1),
        "saved_us": {c: round(cold - statistics.median(took[c]) / 1000, 1) for c in CACHES},
    }


def run_local(args: argparse.Namespace) -> dict[str, Any]:
    paths = [p.resolve() for p in args.logs] or corpus_logs(args.max_events)
    out: dict[str, Any] = {}
    for path in paths:
        try:
            case = make_case(path)
        except (AssayError, ValueError) as exc:
            out[str(path)] = {"error": str(exc)}
            continue
        out[case.name] = (
            breakdown(case, args.runs)
            if args.breakdown
            else measure(case, args.runs, not args.cold_as_bench)
        )
    return out


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Old tree (PYTHONPATH=args.compare) and this one: per log, one short process each, taken in
    turn ``rounds`` times, so both see the same machine load; the median of the processes'
    medians (and the least of their minima)."""
    trees = {"old": str(Path(args.compare).resolve()), "new": str(ROOT)}
    rows: dict[str, dict[str, list[float]]] = {}
    paths = [p.resolve() for p in args.logs] or corpus_logs(args.max_events)
    base = [sys.executable, __file__, "--json", "--runs", str(args.runs)]
    if args.cold_as_bench:
        base.append("--cold-as-bench")
    for path in paths:
        for _ in range(args.rounds):
            for label, tree in trees.items():
                env = dict(os.environ, PYTHONPATH=tree)
                proc = subprocess.run([*base, str(path)], env=env, check=True, capture_output=True)
                for log, row in json.loads(proc.stdout).items():
                    got = rows.setdefault(log, {"events": [row.get("events", 0)]})
                    for k in ("warm_us", "cold_us", "warm_min_us", "cold_min_us"):
                        if k in row:
                            got.setdefault(f"{label}_{k}", []).append(row[k])
    return {
        log: {k: round(min(v) if "_min_" in k else statistics.median(v), 1) for k, v in r.items()}
        for log, r in rows.items()
    }


def callgrind(args: argparse.Namespace) -> dict[str, Any]:
    """Instructions per first check: (setup + N checks) - (setup), over N, under callgrind."""

    def collected(iterations: int) -> int:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        cmd += [sys.executable, __file__, "--_inner", str(iterations), "--mode", args.mode]
        cmd += [str(p) for p in args.logs]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        m = re.search(r"Collected : (\d+)", proc.stderr)
        if m is None:
            raise SystemExit(proc.stderr[-2000:])
        return int(m.group(1))

    base, full = collected(0), collected(args.iterations)
    return {
        "log": str(args.logs[0]),
        "mode": args.mode,
        "instructions_per_check": (full - base) // args.iterations,
    }


def inner(args: argparse.Namespace) -> None:
    case = make_case(args.logs[0].resolve())
    cold = args.mode == "cold"
    for _ in range(5):
        first_check(case)
    for _ in range(args._inner):
        if cold:
            empty_content_caches(case, policy_memos=not args.cold_as_bench)
        first_check(case)
    if args._inner == 0:  # the same cache-emptying work as the timed run, without the checks
        return


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("logs", nargs="*", type=Path)
    p.add_argument("--runs", type=int, default=300, help="timed first checks per log and mode")
    p.add_argument("--max-events", type=int, default=125)
    p.add_argument("--json", action="store_true")
    p.add_argument("--cold-as-bench", action="store_true", help="cold leaves the policy memos")
    p.add_argument("--compare", metavar="OLD_TREE", help="alternate with the code under OLD_TREE")
    p.add_argument("--rounds", type=int, default=3, help="--compare: processes per tree")
    p.add_argument("--callgrind", action="store_true", help="instructions per check (one log)")
    p.add_argument("--mode", choices=("cold", "warm"), default="cold")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument(
        "--breakdown", action="store_true", help="what each content cache saves a cold check"
    )
    p.add_argument("--_inner", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._inner is not None:
        inner(args)
        return 0
    if args.callgrind:
        print(json.dumps(callgrind(args)))
        return 0
    result = compare(args) if args.compare else run_local(args)
    if args.json or args.breakdown:
        print(json.dumps(result, indent=1))
        return 0
    if args.compare:
        cols = [f"{t}_{m}_us" for t in ("old", "new") for m in ("warm", "cold")]
        cols += [f"{t}_{m}_min_us" for t in ("old", "new") for m in ("warm", "cold")]
        head = "".join(f"{c.removesuffix('_us'):>13}" for c in cols)
        print(f"{'log (medians, then minima, µs)':<56}{'ev':>4}{head}")
        for log, r in result.items():
            cells = "".join(f"{r.get(c, 0):>13}" for c in cols)
            print(f"{log[:56]:<56}{int(r['events']):>4}{cells}")
        return 0
    print(f"{'log':<62}{'ev':>4} {'warm µs':>8} {'cold µs':>8} {'quote µs':>8}  status")
    for log, r in result.items():
        if "error" in r:
            print(f"{log:<62} error: {r['error']}")
            continue
        print(
            f"{log:<62}{r['events']:>4} {r['warm_us']:>8} {r['cold_us']:>8} "
            f"{r['verify_quote_us']:>8}  {r['status']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
