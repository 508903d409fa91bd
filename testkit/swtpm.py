"""swtpm nodes for tests and the demo: provisioned like a manufacturer would, started and stopped.

A node is a directory: ``tpm/`` (swtpm state), ``swtpm.pid``, ``swtpm.log`` and ``node.json``
(ports). Provisioning uses ``swtpm_setup`` with swtpm's own ``swtpm_localca`` pointed at a
project-local CA directory, so EK certificates chain to a CA the verifier can be told to trust
(``export_ca`` copies it into a "TPM vendor CA" directory). swtpm is stopped by the pid in its own
pid file, after checking that the pid still belongs to a swtpm process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from assay.errors import ConfigurationError

DEFAULT_BANKS = "sha1,sha256,sha384,sha512"
ROOT_CA_FILE = "swtpm-localca-rootca-cert.pem"
ISSUER_CA_FILE = "issuercert.pem"
_START_TIMEOUT = 10.0


class SwtpmError(ConfigurationError):
    """swtpm could not be provisioned, started or stopped."""


def _run(cmd: list[str], what: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SwtpmError(f"{what}: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SwtpmError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")
    return proc.stdout


def init_ca(ca_dir: Path, *, manufacturer: str = "Assay") -> Path:
    """Write the swtpm_setup/swtpm_localca configuration for a CA living in ``ca_dir``.

    swtpm_localca creates the root CA and the issuing (intermediate) CA on first use; returns
    the swtpm_setup configuration file to pass with ``--config``.
    """
    ca_dir = ca_dir.resolve()
    ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (ca_dir / "swtpm-localca.conf").write_text(
        f"statedir = {ca_dir}\n"
        f"signingkey = {ca_dir / 'signkey.pem'}\n"
        f"issuercert = {ca_dir / ISSUER_CA_FILE}\n"
        f"certserial = {ca_dir / 'certserial'}\n"
    )
    (ca_dir / "swtpm-localca.options").write_text(
        f"--platform-manufacturer {manufacturer}\n--platform-version 2.1\n--platform-model swtpm\n"
    )
    setup = ca_dir / "swtpm_setup.conf"
    setup.write_text(
        f"create_certs_tool = {shutil.which('swtpm_localca') or '/usr/bin/swtpm_localca'}\n"
        f"create_certs_tool_config = {ca_dir / 'swtpm-localca.conf'}\n"
        f"create_certs_tool_options = {ca_dir / 'swtpm-localca.options'}\n"
    )
    return setup


def export_ca(ca_dir: Path, dest: Path) -> list[Path]:
    """Copy the root and issuing CA certificates (PEM) into the verifier's vendor-CA directory."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name, target in (
        (ROOT_CA_FILE, "assay-swtpm-root.pem"),
        (ISSUER_CA_FILE, "assay-swtpm-issuer.pem"),
    ):
        src = ca_dir / name
        if not src.is_file():
            raise SwtpmError(f"CA certificate {src} does not exist (provision a node first)")
        shutil.copyfile(src, dest / target)
        out.append(dest / target)
    return out


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A port P such that P and P+1 are both free (the swtpm TCTI uses P+1 as control channel)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind((host, port + 1))
            except OSError:
                continue
        return port
    raise SwtpmError("no free pair of TCP ports found")


@dataclass(frozen=True, slots=True)
class SwtpmNode:
    """A provisioned swtpm in ``directory``; ``port`` is the command port, ``port + 1`` control."""

    directory: Path
    port: int = 0
    host: str = "127.0.0.1"

    @property
    def ctrl_port(self) -> int:
        return self.port + 1

    @property
    def tcti(self) -> str:
        return f"swtpm:host={self.host},port={self.port}"

    @property
    def state_dir(self) -> Path:
        return self.directory / "tpm"

    @property
    def pid_file(self) -> Path:
        return self.directory / "swtpm.pid"

    @property
    def eventlog(self) -> Path:
        """Where the boot simulator leaves this node's measured-boot log for the agent."""
        return self.directory / "binary_bios_measurements"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"swtpm" in cmdline.split(b"\0")[0] else None


def provision(
    directory: Path,
    ca_dir: Path,
    *,
    banks: str = DEFAULT_BANKS,
    ecc: bool = False,
) -> SwtpmNode:
    """Manufacture a TPM: EKs (RSA-2048 and ECC), EK and platform certificates, PCR banks."""
    node = SwtpmNode(directory.resolve())
    if node.state_dir.exists() and any(node.state_dir.iterdir()):
        raise SwtpmError(f"{node.state_dir} already holds TPM state")
    node.state_dir.mkdir(parents=True, exist_ok=True)
    setup_conf = init_ca(ca_dir)
    cmd = [
        "swtpm_setup",
        "--tpm2",
        "--tpmstate",
        str(node.state_dir),
        "--create-ek-cert",
        "--create-platform-cert",
        "--config",
        str(setup_conf),
        "--pcr-banks",
        banks,
        "--logfile",
        str(node.directory / "swtpm_setup.log"),
    ]
    if ecc:
        cmd.append("--ecc")
    _run(cmd, "swtpm_setup")
    return node


def start(node: SwtpmNode, *, port: int | None = None, startup: bool = True) -> SwtpmNode:
    """Start ``swtpm socket`` as a daemon; without ``startup`` the TPM waits for TPM2_Startup."""
    if node.pid() is not None:
        raise SwtpmError(f"swtpm for {node.directory} already runs (pid {node.pid()})")
    port = port or free_port_pair(node.host)
    node = SwtpmNode(node.directory, port, node.host)
    flags = "not-need-init,startup-clear" if startup else "not-need-init"
    cmd = [
        "swtpm", "socket", "--tpm2",
        "--tpmstate", f"dir={node.state_dir}",
        "--server", f"type=tcp,port={node.port},bindaddr={node.host}",
        "--ctrl", f"type=tcp,port={node.ctrl_port},bindaddr={node.host}",
        "--flags", flags,
        "--pid", f"file={node.pid_file}",
        "--log", f"file={node.directory / 'swtpm.log'},level=1",
        "--daemon",
    ]  # fmt: skip
    node.pid_file.unlink(missing_ok=True)
    _run(cmd, "swtpm socket")
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if node.pid() is not None and _accepts(node.host, node.port):
            (node.directory / "node.json").write_text(
                json.dumps({"host": node.host, "port": node.port, "tcti": node.tcti})
            )
            return node
        time.sleep(0.02)
    stop(node)
    raise SwtpmError(f"swtpm did not start listening on {node.host}:{node.port}")


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def load(directory: Path) -> SwtpmNode:
    """The node as last started (ports from node.json)."""
    try:
        info = json.loads((directory / "node.json").read_text())
        return SwtpmNode(directory.resolve(), int(info["port"]), str(info["host"]))
    except (OSError, ValueError, KeyError) as exc:
        raise SwtpmError(f"{directory}: not a started swtpm node ({exc})") from None


def stop(node: SwtpmNode, timeout: float = 5.0) -> bool:
    """Stop the swtpm whose pid is in the node's pid file; False if none was running."""
    pid = node.pid()
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.pid() is None or _is_zombie(pid):
            break
        time.sleep(0.02)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    node.pid_file.unlink(missing_ok=True)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def clone(template: SwtpmNode, directory: Path) -> SwtpmNode:
    """A copy of a provisioned (stopped) node: same EK and certificates, own directory and port.

    Tests clone one manufactured TPM instead of running swtpm_setup for every node.
    """
    node = SwtpmNode(directory.resolve())
    if node.state_dir.exists():
        raise SwtpmError(f"{node.state_dir} already exists")
    shutil.copytree(template.state_dir, node.state_dir, ignore=shutil.ignore_patterns(".lock"))
    return node


@contextlib.contextmanager
def running(node: SwtpmNode, *, startup: bool = True) -> Iterator[SwtpmNode]:
    """Start the node's swtpm and always stop it (by its pid file) when the block ends."""
    started = start(node, startup=startup)
    try:
        yield started
    finally:
        stop(started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swtpm-node", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("provision", help="create TPM state with EK certificates from the local CA")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--ca-dir", type=Path, required=True)
    p.add_argument("--export-ca", type=Path, help="copy the CA certificates here for the verifier")
    p.add_argument("--pcr-banks", default=DEFAULT_BANKS)
    s = sub.add_parser("start", help="start swtpm on a TCP port (control channel on port+1)")
    s.add_argument("--dir", type=Path, required=True)
    s.add_argument("--port", type=int)
    s.add_argument("--no-startup", action="store_true", help="leave TPM2_Startup to the caller")
    t = sub.add_parser("stop", help="stop the swtpm of a node by its pid file")
    t.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "provision":
            node = provision(args.dir, args.ca_dir, banks=args.pcr_banks)
            if args.export_ca:
                export_ca(args.ca_dir.resolve(), args.export_ca)
            print(f"provisioned {node.directory}")
        elif args.cmd == "start":
            node = start(SwtpmNode(args.dir.resolve()), port=args.port, startup=not args.no_startup)
            print(f"started pid {node.pid()} tcti {node.tcti}")
        else:
            stopped = stop(SwtpmNode(args.dir.resolve()))
            print("stopped" if stopped else "not running")
    except ConfigurationError as exc:
        print(f"swtpm-node: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
