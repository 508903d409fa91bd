"""``fleet.process_cpu``, what ``scripts/fleet`` reports as server and database CPU: a child that
ended and was reaped (a PostgreSQL backend whose connection closed) still counts."""

from __future__ import annotations

import subprocess
import sys

from testkit import fleet

SPIN = "import time\nwhile time.process_time() < 0.5: pass\n"
PARENT = (
    "import subprocess, sys, time\n"
    f"subprocess.run([sys.executable, '-c', {SPIN!r}], check=True)\n"
    "print('reaped', flush=True)\n"
    "time.sleep(30)\n"
)


def test_cpu_of_a_child_that_ended_and_was_reaped_still_counts() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "reaped\n"
        cpu = fleet.process_cpu([parent.pid])
    finally:
        parent.kill()
        parent.wait()
    # The parent itself spent a few tens of ms starting Python; the reaped child's 0.5 s is in.
    assert 0.5 <= cpu < 5, cpu
