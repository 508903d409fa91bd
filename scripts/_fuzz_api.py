"""Long-run API fuzzing: schemathesis against a real gunicorn verifier with real data
(testkit.apifuzz), every response checked against docs/openapi.yaml. Prints the number of
requests and every finding; exits 1 on any finding or error.

Usage: python scripts/_fuzz_api.py [EXAMPLES_PER_OPERATION] [--seed N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from testkit.apifuzz import fuzz, populated_verifier


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("examples", nargs="?", type=int, default=300)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--keep", metavar="DIR", help="keep the reports and server log here")
    args = parser.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="assay-fuzz-api-"))
    start = time.monotonic()
    with populated_verifier(base / "verifier") as verifier:
        result = fuzz(verifier, base / "reports", max_examples=args.examples, seed=args.seed)
    took = time.monotonic() - start
    print(
        f"api fuzz: {result.requests} requests to {result.operations} operations "
        f"({args.examples} examples each) in {took:.0f} s: {len(result.failures)} findings, "
        f"{len(result.errors)} errors (reports in {base / 'reports'})"
    )
    for line in result.failures + result.errors:
        print(f"  {line}")
    return 1 if result.failures or result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
