"""Boot a node image under QEMU (q35, SMM, TCG) with OVMF and a freshly manufactured swtpm.

``VmNode`` owns two processes and a work directory: swtpm (control socket only; QEMU passes the
data channel) and QEMU. ``boot()`` runs the guest until it powers off (``-no-shutdown`` keeps QEMU
alive, the QMP ``SHUTDOWN`` event says when), takes the event log the guest wrote to its second
serial port, then SIGKILLs QEMU so that it cannot shut the TPM down: the TPM keeps the boot's PCRs
for :mod:`tests.vm.swtpm_handoff`. ``close()`` stops whatever still runs, by the pids it started.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from testkit import swtpm as agent_swtpm

from .builder import HANDOFF_BEGIN, HANDOFF_END, OVMF_CODE, NodeImage, VmBuildError
from .runtime_image import FACT, IMA_ASCII_BEGIN, IMA_ASCII_END, IMA_BEGIN, IMA_END, RAN
from .swtpm_handoff import HandoffTpm

BOOT_TIMEOUT = 240.0
BANKS = "sha1,sha256,sha384,sha512"


class VmBootError(VmBuildError):
    """The guest did not power off in time, or handed out no event log."""


@dataclass(frozen=True, slots=True)
class BootResult:
    """What one boot produced: the guest's log bytes and what it saw, and how long it took."""

    variant: str
    event_log: bytes
    guest_cmdline: str
    console: str
    seconds: float
    ima_log: bytes | None = None  # binary_runtime_measurements (runtime nodes)
    ima_ascii: bytes | None = None  # ascii_runtime_measurements
    ran: tuple[str, ...] = ()  # "rc=N COMMAND" for each program a runtime node ran
    facts: Mapping[str, str] = field(default_factory=dict)  # what a runtime node's guest read


def _blob(lines: list[str], begin: str, end: str, what: str) -> bytes | None:
    """The base64 between two marker lines, or None when the guest sent no such block."""
    if begin not in lines:
        return None
    start = lines.index(begin)
    try:
        stop = lines.index(end, start)
    except ValueError:
        raise VmBootError(f"the guest's {what} has no end marker") from None
    try:
        return base64.b64decode("".join(lines[start + 1 : stop]), validate=True)
    except binascii.Error as exc:
        raise VmBootError(f"the guest's {what} is not valid base64: {exc}") from None


@dataclass(frozen=True, slots=True)
class RuntimeHandoff:
    ima_log: bytes | None
    ima_ascii: bytes | None
    ran: tuple[str, ...]
    facts: Mapping[str, str]


def parse_runtime_handoff(text: str) -> RuntimeHandoff:
    """A runtime node's IMA list (binary, ASCII), the programs it ran (``rc=N COMMAND``) and the
    facts its guest read (``ASSAY-FACT NAME VALUE``)."""
    lines = [line.strip("\r") for line in text.splitlines()]
    binary = _blob(lines, IMA_BEGIN, IMA_END, "IMA list")
    ascii_ = _blob(lines, IMA_ASCII_BEGIN, IMA_ASCII_END, "ASCII IMA list")
    ran = tuple(ln[len(RAN) + 1 :] for ln in lines if ln.startswith(RAN + " "))
    facts = {}
    for ln in lines:
        if ln.startswith(FACT + " "):
            name, _, value = ln[len(FACT) + 1 :].partition(" ")
            facts[name] = value.strip(" -")  # sha256sum of stdin ends in "  -"
    return RuntimeHandoff(binary, ascii_, ran, facts)


def parse_handoff(text: str) -> tuple[bytes, str]:
    """The event log (base64 between markers) and the kernel command line the guest reported."""
    lines = [line.strip("\r") for line in text.splitlines()]
    cmdline = next(
        (ln[len("ASSAY-CMDLINE ") :] for ln in lines if ln.startswith("ASSAY-CMDLINE ")), ""
    )
    try:
        start, end = lines.index(HANDOFF_BEGIN), lines.index(HANDOFF_END)
    except ValueError:
        raise VmBootError("the guest handed out no event log (markers missing)") from None
    try:
        log = base64.b64decode("".join(lines[start + 1 : end]), validate=True)
    except binascii.Error as exc:
        raise VmBootError(f"the guest's event log is not valid base64: {exc}") from None
    return log, cmdline


class VmNode:
    """One node: its swtpm (manufactured with EK certificates from ``ca_dir``) and one boot."""

    def __init__(self, image: NodeImage, workdir: Path, ca_dir: Path) -> None:
        self.image = image
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_dir = ca_dir
        self.ctrl_path = self.dir / "swtpm-ctrl.sock"
        self.eventlog_path = self.dir / "binary_bios_measurements"
        self.ima_path = self.dir / "binary_runtime_measurements"
        self._swtpm: subprocess.Popen[bytes] | None = None
        self._qemu: subprocess.Popen[bytes] | None = None
        self._closed = False  # close() may come from another thread while boot() runs
        self.result: BootResult | None = None

    # -- processes -----------------------------------------------------------------------------

    def start_tpm(self) -> None:
        """Manufacture the TPM (swtpm_setup, EK certs from the local CA) and start swtpm."""
        agent_swtpm.provision(self.dir / "tpmnode", self.ca_dir, banks=BANKS)
        cmd = [
            "swtpm", "socket", "--tpm2",
            "--tpmstate", f"dir={self.dir / 'tpmnode' / 'tpm'}",
            "--ctrl", f"type=unixio,path={self.ctrl_path}",
            "--log", f"file={self.dir / 'swtpm.log'},level=1",
        ]  # fmt: skip
        self._swtpm = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not self.ctrl_path.exists():
            if self._swtpm.poll() is not None or time.monotonic() > deadline:
                raise VmBootError(f"swtpm did not create {self.ctrl_path}")
            time.sleep(0.02)

    def _qemu_cmd(self, qmp: Path) -> list[str]:
        vars_copy = self.dir / "OVMF_VARS.fd"
        shutil.copyfile(self.image.ovmf_vars, vars_copy)
        disk = self.image.disk  # a runtime node's root disk: /dev/vdb, after the ESP
        root = ["-drive", f"if=virtio,format=raw,readonly=on,file={disk}"] if disk else []
        return [
            "qemu-system-x86_64",
            "-machine", "q35,smm=on,accel=tcg",
            "-m", "512", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
            "-global", "driver=cfi.pflash01,property=secure,value=on",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            "-chardev", f"socket,id=chrtpm,path={self.ctrl_path}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", "tpm-tis,tpmdev=tpm0",
            "-drive", f"if=virtio,format=raw,readonly=on,file={self.image.esp}",
            *root,
            "-nic", "none",
            "-no-shutdown",
            "-serial", f"file:{self.dir / 'console.log'}",
            "-serial", f"file:{self.dir / 'handoff.log'}",
            "-qmp", f"unix:{qmp},server=on,wait=off",
        ]  # fmt: skip

    def boot(self, timeout: float = BOOT_TIMEOUT) -> BootResult:
        """Boot until the guest powers off; keep swtpm (and its PCRs) running afterwards."""
        if self._closed:
            raise VmBootError(f"{self.image.variant.name}: node closed before its boot")
        if self._swtpm is None:
            self.start_tpm()
        qmp = self.dir / "qmp.sock"
        started = time.monotonic()
        qemu = self._qemu = subprocess.Popen(
            self._qemu_cmd(qmp),
            stdin=subprocess.DEVNULL,
            stdout=(self.dir / "qemu.out").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            if self._closed:
                raise VmBootError(f"{self.image.variant.name}: node closed during its boot")
            self._wait_shutdown(qemu, qmp, started + timeout)
        finally:
            self._kill_qemu()
        seconds = time.monotonic() - started
        console = (self.dir / "console.log").read_text(errors="replace")
        handoff = (self.dir / "handoff.log").read_text(errors="replace")
        try:
            log, cmdline = parse_handoff(handoff)
            runtime = parse_runtime_handoff(handoff)
            if self.image.disk is not None and runtime.ima_log is None:
                raise VmBootError(f"the guest handed out no IMA list: {handoff[-300:]!r}")
        except VmBootError as exc:
            raise VmBootError(
                f"{self.image.variant.name}: {exc}; console: {console[-300:]!r}"
            ) from None
        self.eventlog_path.write_bytes(log)  # where an agent on the node would read it
        if runtime.ima_log is not None:
            self.ima_path.write_bytes(runtime.ima_log)
        self.result = BootResult(
            self.image.variant.name, log, cmdline, console, seconds, runtime.ima_log,
            runtime.ima_ascii, runtime.ran, runtime.facts,
        )  # fmt: skip
        return self.result

    def reboot(self, image: NodeImage | None = None, timeout: float = BOOT_TIMEOUT) -> BootResult:
        """Boot again on the same TPM (QEMU's TPM emulator resets it at start-up: fresh PCRs, the
        reset counter one up), from ``image`` if given — e.g. rolled forward to another kernel
        that the A/B partitions hold. The node keeps its TPM, so its EK, AK and identity."""
        if image is not None:
            self.image = image
        for stale in ("qmp.sock", "console.log", "handoff.log"):
            (self.dir / stale).unlink(missing_ok=True)
        self.result = None
        return self.boot(timeout)

    def _wait_shutdown(self, qemu: subprocess.Popen[bytes], qmp: Path, deadline: float) -> None:
        with self._qmp_connected(qemu, qmp, deadline) as sock:
            sock.settimeout(1.0)
            sock.sendall(b'{"execute": "qmp_capabilities"}\n')
            buf = b""
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    raise VmBootError("QEMU closed its QMP socket before the guest powered off")
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip() and json.loads(line).get("event") == "SHUTDOWN":
                        return
        tail = (self.dir / "console.log").read_text(errors="replace")[-400:]
        raise VmBootError(f"{self.image.variant.name}: no power-off within the timeout: {tail!r}")

    @contextlib.contextmanager
    def _qmp_connected(
        self, qemu: subprocess.Popen[bytes], qmp: Path, deadline: float
    ) -> Iterator[socket.socket]:
        """A connection to QEMU's QMP socket. QEMU binds the socket's path before it listens on
        it: a connect in between is refused (seen on a loaded machine), so a refusal is retried
        while QEMU runs and the deadline allows."""
        while True:
            if qemu.poll() is not None or time.monotonic() > deadline:
                out = (self.dir / "qemu.out").read_text(errors="replace")[-400:]
                what = f"exited ({qemu.returncode})" if qemu.returncode is not None else "timed out"
                raise VmBootError(
                    f"{self.image.variant.name}: QEMU {what} before its QMP socket took a "
                    f"connection: {out!r}"
                )
            if qmp.exists():
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(qmp))
                except (ConnectionRefusedError, FileNotFoundError):
                    sock.close()
                else:
                    with sock:
                        yield sock
                    return
            time.sleep(0.05)

    def _kill_qemu(self) -> None:
        """SIGKILL: a clean QEMU exit sends CMD_SHUTDOWN, which would end swtpm with our PCRs."""
        qemu, self._qemu = self._qemu, None  # one owner, also when two threads get here
        if qemu is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(qemu.pid, signal.SIGKILL)
        qemu.wait(timeout=10)

    def tpm(self) -> HandoffTpm:
        """The agent's Tpm over the TPM the guest measured into (only after ``boot``)."""
        if self.result is None or self._qemu is not None:
            raise VmBootError("take the TPM over only after the guest powered off")
        return HandoffTpm(self.ctrl_path)

    def close(self) -> None:
        """Stop QEMU and swtpm (by the pids started here); safe to call again, from any thread."""
        self._closed = True
        self._kill_qemu()
        swtpm, self._swtpm = self._swtpm, None
        if swtpm is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(swtpm.pid, signal.SIGTERM)
            try:
                swtpm.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(swtpm.pid, signal.SIGKILL)
                swtpm.wait(timeout=5)

    def __enter__(self) -> VmNode:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
