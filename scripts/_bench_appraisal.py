"""Benchmark helper: median appraisal time of one log against a realistic golden policy.

``bench_appraisal(log_path)`` captures a set from the log, pads it to 500 dbx entries and 20 boot
applications, compiles it once, verifies the log once (as the service does per boot), then times
``appraise`` alone; ``first_check_warm_us`` / ``first_check_cold_us`` time a full first check
(parse, replay, appraise) with the content caches warm, and emptied before each call (cold: the
firmware is new to the verifier). Called by ``scripts/bench``; run directly to print the figures.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import statistics
import sys
import time
from typing import Any

from assay import bootfacts
from assay.algorithms import HashAlg
from assay.eventlog import LogCaches, assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.model import BootApp, GoldenSet, digests
from verifier.appraisal import appraise, compile_golden


def _padded(g: GoldenSet) -> tuple[GoldenSet, GoldenSet]:
    dbx = list(g.secure_boot.dbx_must_include)
    dbx += [hashlib.sha256(b"dbx%d" % i).hexdigest() for i in range(500 - len(dbx))]
    apps = list(g.boot_apps)
    apps += [
        BootApp(
            f"padding {i}",
            "other",
            digests({HashAlg.SHA256: hashlib.sha256(b"app%d" % i).digest()}),
        )
        for i in range(20 - len(apps))
    ]
    # The log's real dbx would not hold the padding, so the set requires it of a separate set.
    pad = dataclasses.replace(
        g,
        name=g.name + "-dbx",
        secure_boot=dataclasses.replace(g.secure_boot, dbx_must_include=tuple(dbx)),
    )
    return dataclasses.replace(g, boot_apps=tuple(apps)), pad


def empty_content_caches(caches: LogCaches) -> None:
    """Every cache keyed by event content: the verifier's LogCaches and bootfacts' lru_caches."""
    caches.clear()
    bootfacts.signature_database.cache_clear()
    bootfacts.authority_id.cache_clear()


def first_checks(
    raw: bytes, bank: HashAlg, policy: Any, caches: LogCaches, rounds: int
) -> tuple[float, float]:
    """Median µs of a full first check — parse, replay into a verified log, appraise — with the
    content caches warm (firmware the verifier has seen) and cold (emptied before each call)."""
    out = []
    for cold in (False, True):
        samples = []
        for _ in range(rounds):
            if cold:
                empty_content_caches(caches)
            t0 = time.perf_counter_ns()
            vlog = assume_quoted_for_review(parse_event_log(raw), bank, caches=caches)
            appraise(vlog, policy)
            samples.append(time.perf_counter_ns() - t0)
        out.append(round(statistics.median(samples) / 1000, 1))
    return out[0], out[1]


def bench_appraisal(log_path: str, *, rounds: int = 2000) -> dict[str, Any]:
    with open(log_path, "rb") as fh:
        raw = fh.read()
    log = parse_event_log(raw)
    bank = HashAlg.SHA256 if HashAlg.SHA256 in log.banks else log.banks[0]
    caches = LogCaches()  # as the service keeps one per process, shared by every node's log
    vlog = assume_quoted_for_review(log, bank, caches=caches)
    now = dt.datetime.now(dt.UTC)
    main_set, dbx_set = _padded(capture(vlog, name="bench", version="1"))
    policy = compile_golden([main_set, dbx_set], now=now)
    verdict = appraise(vlog, policy)  # warm: decoded signature databases are cached by content
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        appraise(vlog, policy)
        times.append(time.perf_counter_ns() - t0)
    # First appraisal of a boot: a fresh verified log, so the facts are extracted from the events
    # (values decoded from byte-identical events of earlier boots come from the shared caches).
    first = []
    for _ in range(max(50, rounds // 10)):
        fresh = assume_quoted_for_review(log, bank, caches=caches)
        t0 = time.perf_counter_ns()
        appraise(fresh, policy)
        first.append(time.perf_counter_ns() - t0)
    t0 = time.perf_counter_ns()
    compile_golden([main_set, dbx_set], now=now)
    compile_us = (time.perf_counter_ns() - t0) / 1000
    warm, cold = first_checks(raw, bank, policy, caches, max(50, rounds // 10))
    return {
        "appraise_us": round(statistics.median(times) / 1000, 1),
        "first_appraise_us": round(statistics.median(first) / 1000, 1),
        "first_check_warm_us": warm,
        "first_check_cold_us": cold,
        "events": len(vlog.events),
        "checks": len(verdict.checks),
        "status": verdict.status,
        "compile_us": round(compile_us, 1),
    }


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(path, bench_appraisal(path))
