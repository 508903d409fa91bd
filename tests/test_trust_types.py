"""The type checker keeps unverified evidence out of the verified path.

A parsed quote, a node's claimed PCR values, a log's own replay or an offline review are different
types from what a verified quote yields; ``mypy --strict`` must reject every place
``tests/typecheck/unverified_evidence.py`` passes one where the other is required. (Before
``verify_log`` took a ``VerifiedQuote``, a Protocol let any object with ``.pcrs`` through.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "typecheck" / "unverified_evidence.py"


def test_mypy_rejects_unverified_evidence_on_the_verified_path() -> None:
    marked = {
        n for n, line in enumerate(CASES.read_text().splitlines(), 1) if line.endswith("# rejected")
    }
    assert len(marked) >= 5
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(CASES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    errors = {
        int(m.group(1)) for m in re.finditer(rf"{re.escape(CASES.name)}:(\d+): error", run.stdout)
    }
    assert errors == marked, run.stdout
