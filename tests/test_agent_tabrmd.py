"""The agent through tpm2-abrmd, the user-space TPM resource manager, on a real swtpm.

Covers the ``tabrmd`` TCTI, and a TPM whose PCRs another client keeps extending, as IMA does on a
busy node. tpm2-abrmd runs on a private D-Bus session bus that the fixture starts and stops.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import EXIT_OK, EXIT_TPM_BUSY, NoTpmDevice
from agent.tpm import Tpm
from assay.algorithms import HashAlg
from assay.tpm2 import parse_public, verify_quote
from testkit import swtpm

pytestmark = pytest.mark.swtpm

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tabrmd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``tabrmd:`` TCTI spec for tpm2-abrmd in front of a fresh swtpm."""
    base = tmp_path_factory.mktemp("tabrmd")
    node = swtpm.provision(base / "tpm", base / "ca")
    with swtpm.running(node) as started:
        bus = subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        name = f"com.intel.tss2.Tabrmd.assay{os.getpid()}"
        spec = f"tabrmd:bus_name={name},bus_type=session"
        saved = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        abrmd: subprocess.Popen[bytes] | None = None
        try:
            assert bus.stdout is not None
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = bus.stdout.readline().strip()
            abrmd = subprocess.Popen(
                ["tpm2-abrmd", "--session", "--allow-root", f"--dbus-name={name}",
                 f"--tcti=swtpm:host={started.host},port={started.port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + 15
            while True:
                try:
                    Tpm(spec).close()
                    break
                except NoTpmDevice:
                    if time.monotonic() > deadline or abrmd.poll() is not None:
                        raise
                    time.sleep(0.1)
            yield spec
        finally:
            for proc in (abrmd, bus):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
            if saved is None:
                os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
            else:
                os.environ["DBUS_SESSION_BUS_ADDRESS"] = saved


def _quote(spec: str, state: Path, nonce: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "--tcti", spec, "--state-dir", str(state),
         "quote", "--nonce", nonce.hex(), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _verifies(proc: subprocess.CompletedProcess[str], nonce: bytes) -> bool:
    """The quote verifies against the PCR values the agent returned with it."""
    out = json.loads(proc.stdout)
    pcrs = {
        HashAlg.from_bank(bank): {int(i): bytes.fromhex(v) for i, v in values.items()}
        for bank, values in out["pcrs"].items()
    }
    ak = parse_public(base64.b64decode(out["ak_public"]))
    verify_quote(base64.b64decode(out["attest"]), base64.b64decode(out["signature"]), ak,
                 nonce, pcrs)  # fmt: skip
    return True


class Extender(threading.Thread):
    """Another client of the resource manager extending PCR 14 (in the default selection) every
    ``pause`` seconds, as IMA does while a node runs."""

    def __init__(self, spec: str, pause: float) -> None:
        super().__init__(daemon=True)
        self.spec, self.pause, self.count = spec, pause, 0
        self.done = threading.Event()

    def run(self) -> None:
        with Tpm(self.spec) as tpm:
            while not self.done.is_set():
                tpm.pcr_extend(14, {HashAlg.SHA256: os.urandom(32)})
                self.count += 1
                if self.pause:
                    self.done.wait(self.pause)


def test_agent_quotes_through_tabrmd(tabrmd: str, tmp_path: Path) -> None:
    info = subprocess.run(
        [sys.executable, "-m", "agent", "--tcti", tabrmd, "tpm", "info", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert info.returncode == EXIT_OK, info.stderr
    got = json.loads(info.stdout)
    assert got["tcti"] == tabrmd and got["pcr_banks"]["sha256"] == list(range(24))
    nonce = os.urandom(20)
    proc = _quote(tabrmd, tmp_path / "state", nonce)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert _verifies(proc, nonce)
    again = _quote(tabrmd, tmp_path / "state", nonce)  # the AK is reused: same key, same Name
    assert json.loads(again.stdout)["ak_public"] == json.loads(proc.stdout)["ak_public"]


def test_quote_while_pcrs_change_is_consistent_or_busy(tabrmd: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert _quote(tabrmd, state, b"\x01").returncode == EXIT_OK  # AK made before the load starts
    # Extends back to back: no read-quote-read window stays still, so every quote is "busy".
    hammer = Extender(tabrmd, pause=0)
    hammer.start()
    try:
        busy = [_quote(tabrmd, state, os.urandom(16)) for _ in range(3)]
    finally:
        hammer.done.set()
        hammer.join(10)
    assert hammer.count > 100
    for proc in busy:
        assert proc.returncode == EXIT_TPM_BUSY, proc.stderr
        assert proc.stderr.strip().splitlines() in (
            ["assay-agent: PCRs kept changing while being read"],
            ["assay-agent: PCRs kept changing while quoting"],
        )
    # An extend now and then, as on a node at run time: quotes succeed, and each one's PCR
    # values are the ones it signed (a quote taken across an extend would not verify).
    slow = Extender(tabrmd, pause=0.25)
    slow.start()
    try:
        results = []
        for _ in range(6):
            nonce = os.urandom(16)
            results.append((_quote(tabrmd, state, nonce), nonce))
    finally:
        slow.done.set()
        slow.join(10)
    assert slow.count >= 2
    ok = [(p, n) for p, n in results if p.returncode == EXIT_OK]
    assert all(p.returncode in (EXIT_OK, EXIT_TPM_BUSY) for p, _ in results)
    assert len(ok) >= 4
    assert all(_verifies(p, n) for p, n in ok)
