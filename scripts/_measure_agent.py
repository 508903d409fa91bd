"""Resident set and CPU of `agent run` against the real verifier and a swtpm node.

Usage: python scripts/_measure_agent.py [PYTHON]   (PYTHON: the interpreter whose agent to measure;
default this one; `scripts/bench --agent` installs the agent as a node does, with
scripts/install-agent, and measures that one). Starts the verifier (gunicorn, SQLite) and one swtpm booted from the Debian
Secure Boot log with the demo's plumbing, enrolls, then:
- samples VmRSS of `agent run --count 60` every 20 ms (steady state: the second half);
- runs `agent run` for 41 and for 1 round under /usr/bin/time: peak RSS, and CPU per attestation
  as (CPU of 41 rounds - CPU of 1 round) / 40. swtpm is another process, so TPM time is not counted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _demo as d

from testkit import swtpm


def _steady_rss(cmd: list[str], cwd: str) -> tuple[float, float]:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples: list[float] = []
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except FileNotFoundError:
            break
        found = re.search(r"VmRSS:\s+(\d+)", status)
        if found:
            samples.append(int(found.group(1)) / 1024)
        time.sleep(0.02)
    late = sorted(samples[len(samples) // 2 :]) or [0.0]
    return late[len(late) // 2], max(samples or [0.0])


def _timed(cmd: list[str], cwd: str) -> tuple[float, float]:
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%M %U %S", *cmd], cwd=cwd, capture_output=True, text=True
    )
    rss_kb, user, system = out.stderr.strip().splitlines()[-1].split()
    return int(rss_kb) / 1024, float(user) + float(system)


def measure_agent(python: str) -> dict[str, float | str]:
    """VmRSS and CPU figures of `agent run` for the agent installed under PYTHON."""
    os.environ.setdefault("ASSAY_AGENT_JITTER", "0")
    work = Path(tempfile.mkdtemp(prefix="assay-measure-"))
    demo = d.Demo(work=work, quiet=True)
    try:
        swtpm.init_ca(work / "ca")
        node = d.Node(
            "m1", d.CORPUS / "qemu-ovmf-debian12/secureboot-shim-grub-kernel.bin", {"f": "m"}
        )
        d.NODES[:] = [node]
        d.boot_nodes(demo)
        d.start_verifier(demo)
        golden = work / "golden.yaml"
        demo.run("golden", "capture", "--from-log", str(node.log), "-o", str(golden),
                 "--name", "m", "--version", "1", capture=True)  # fmt: skip
        demo.verifier("golden", "add", str(golden), capture=True)
        demo.verifier("golden", "assign", "m", capture=True)
        d.enroll_and_attest(demo)
        cmd = [python, "-m", "agent", "run", "--tcti", d._tcti(node), "--state-dir",
               str(node.dir / "agent"), "--eventlog", str(node.eventlog), "--node", node.name,
               "--verifier", demo.url, "--interval", "0.1"]  # fmt: skip
        cwd = tempfile.gettempdir()  # so `-m agent` is the installed package of PYTHON
        steady, top = _steady_rss([*cmd, "--count", "60"], cwd)
        peak41, cpu41 = _timed([*cmd, "--count", "41"], cwd)
        _, cpu1 = _timed([*cmd, "--count", "1"], cwd)
    finally:
        demo.stop_all()
    return {
        "python": python,
        "steady_rss_mb": round(steady, 1),
        "max_sampled_rss_mb": round(top, 1),
        "peak_rss_mb": round(peak41, 1),
        "cpu_ms_per_attestation": round((cpu41 - cpu1) / 40 * 1000, 1),
    }


def main() -> int:
    m = measure_agent(sys.argv[1] if len(sys.argv) > 1 else sys.executable)
    print(f"agent run ({m['python']}): steady VmRSS {m['steady_rss_mb']} MB (max sampled "
          f"{m['max_sampled_rss_mb']}); peak RSS {m['peak_rss_mb']} MB; CPU per attestation "
          f"{m['cpu_ms_per_attestation']} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
