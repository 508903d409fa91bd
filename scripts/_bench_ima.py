"""Benchmark helper: IMA parse + replay of a long list, and appraisal of the entries a node adds
between two attestations.

``bench_ima()`` returns the figures (seconds for the long list, microseconds otherwise):

* ``parse_replay_100k_s``: parse a 100,000-entry binary list and replay it from boot (SHA-1 and
  SHA-256, both extend forms), one run timed with ``time.perf_counter``; ``..._all_banks_s`` the
  same for every bank this Python computes; ``parse_100k_s`` the parse alone.
* ``appraise_1000_new_us``: median of ``appraise_runtime`` over 1,000 new entries of a continuing
  list, against a compiled policy of 20,000 paths, 12 exclusion globs and signature requirements;
  ``incremental_1000_new_us`` the whole steady-state step (parse the chunk, ``verify_ima`` against
  a genuine quote, appraise).

Called by ``scripts/bench`` (when wired in) or directly: ``python scripts/_bench_ima.py``. The
lists are made by ``tests/imalogbuilder.py`` to the kernel's format.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assay.algorithms import HashAlg  # noqa: E402
from assay.ima import ImaReplay, parse_ima_log, replay_from, replay_ima, verify_ima  # noqa: E402
from golden.model import digests  # noqa: E402
from golden.runtime import RuntimePolicy, freeze  # noqa: E402
from testkit.quotes import quote_of  # noqa: E402
from tests import imalogbuilder as b  # noqa: E402
from verifier.appraisal.runtime import appraise_runtime, compile_runtime  # noqa: E402

BANKS = (HashAlg.SHA1, HashAlg.SHA256)
EXCLUDES = (
    "/var/log/*",
    "/var/lib/*",
    "/var/cache/*",
    "/tmp/*",  # noqa: S108 - a glob in a policy, not a file
    "/run/*",
    "/home/*",
    "/root/*",
    "/proc/*",
    "/sys/*",
    "/dev/*",
    "/etc/ssh/ssh_host_*",
    "/srv/scratch/*",
)


def _files(n: int, start: int = 0) -> list[b.Made]:
    return [
        b.file_entry(f"/usr/lib/x86_64-linux-gnu/libexample{i}.so.{i % 7}".encode(), b"lib %d" % i)
        for i in range(start, start + n)
    ]


def bench_long_list(n: int = 100_000) -> dict[str, Any]:
    made = [b.boot_aggregate_entry(b.pcrs_0_9()), *_files(n)]
    data = b.binary(made)
    t0 = time.perf_counter()
    log = parse_ima_log(data)
    t1 = time.perf_counter()
    state = replay_ima(log, BANKS)
    t2 = time.perf_counter()
    replay_ima(parse_ima_log(data))
    t3 = time.perf_counter()
    assert state.value(HashAlg.SHA256, 10) == b.expected_pcr(made, "sha256")
    return {
        "entries": len(log.entries),
        "bytes": len(data),
        "parse_100k_s": round(t1 - t0, 3),
        "parse_replay_100k_s": round(t2 - t0, 3),
        "parse_replay_100k_all_banks_s": round(t3 - t2, 3),
    }


def _policy(approved: list[b.Made]) -> RuntimePolicy:
    files = {
        m.fields[1][:-1].decode(): [digests({HashAlg.SHA256: m.fields[0][8:]})] for m in approved
    }
    for i in range(20_000 - len(files)):  # the rest of a distribution's files
        files[f"/usr/share/pad/{i}"] = [
            digests({HashAlg.SHA256: hashlib.sha256(b"%d" % i).digest()})
        ]
    return RuntimePolicy("bench", "1", files=freeze(files), exclude=EXCLUDES)


def bench_new_entries(n: int = 1000, rounds: int = 200) -> dict[str, Any]:
    """A node that attested after 5,000 entries and now has ``n`` more."""
    before = [b.boot_aggregate_entry(b.pcrs_0_9()), *_files(5000)]
    new = _files(n, start=5000)
    data = b.binary([*before, *new])
    head = parse_ima_log(data[: len(b.binary(before))])
    state = replay_from(ImaReplay.initial(BANKS), head)
    pcrs = dict(b.pcrs_0_9()) | {10: b.expected_pcr([*before, *new], "sha256")}
    quote = quote_of({HashAlg.SHA256: pcrs})
    now = dt.datetime.now(dt.UTC)
    compiled = compile_runtime([_policy([*before, *new])], now)
    chunk_bytes = data[state.offset :]

    def step() -> list[Any]:
        chunk = parse_ima_log(chunk_bytes, start_index=state.entries, start_offset=state.offset)
        return appraise_runtime(verify_ima(state, chunk, quote, HashAlg.SHA256), compiled)

    chunk = parse_ima_log(chunk_bytes, start_index=state.entries, start_offset=state.offset)
    evidence = verify_ima(state, chunk, quote, HashAlg.SHA256)
    checks = appraise_runtime(evidence, compiled)
    assert [c.reason for c in checks] == ["ima_entries_approved"], checks
    return {
        "new_entries": len(evidence.entries),
        "policy_paths": len(compiled.files),
        "appraise_1000_new_us": _median_us(lambda: appraise_runtime(evidence, compiled), rounds),
        "incremental_1000_new_us": _median_us(step, max(20, rounds // 10)),
        "compile_us": _median_us(lambda: compile_runtime([_policy(new)], now), 5),
    }


def _median_us(fn: Any, runs: int) -> float:
    fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return round(statistics.median(samples) * 1e6, 1)


def bench_ima() -> dict[str, Any]:
    return {**bench_long_list(), **bench_new_entries()}


if __name__ == "__main__":
    print(json.dumps(bench_ima(), indent=2))
