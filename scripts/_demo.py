"""The demo behind scripts/demo: a verifier, several swtpm nodes booted from real logs, golden sets
from Debian's packages and by capture, enrollment and attestation with the real agent, a tampered
node, and a revocation that moves a node to untrusted without new evidence.

Every step runs the project's own command lines, as an operator would. Everything started here is
stopped at the end (also on error or Ctrl-C), and the work directory is removed unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "eventlogs"
PY = sys.executable
DEB_CACHE = Path(os.environ.get("ASSAY_DEB_CACHE", Path.home() / ".cache" / "assay" / "debs"))


@dataclass
class Node:
    name: str
    log: Path
    labels: dict[str, str]
    replace_event: str | None = None
    port: int = 0
    dir: Path = Path()
    eventlog: Path = Path()


@dataclass
class Demo:
    work: Path
    quiet: bool
    events: list[dict[str, Any]] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    node_dirs: list[Path] = field(default_factory=list)
    url: str = ""
    admin: str = ""

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"\n== {text}", flush=True)

    def record(self, what: str, **detail: Any) -> None:
        self.events.append({"t": round(time.time(), 3), "event": what, **detail})

    def run(self, *args: str, capture: bool = False, check: bool = True) -> str:
        """Run one of the project's commands; show its output unless --json."""
        cmd = [PY, "-m", *args] if not args[0].startswith("/") else list(args)
        env = {**os.environ, "COLUMNS": "160"}  # tables are read in a log, not a narrow pipe
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
        if not self.quiet and not capture and proc.stdout.strip():
            print(proc.stdout.rstrip())
        if check and proc.returncode != 0:
            raise SystemExit(
                f"demo: `{' '.join(cmd[2:] if cmd[0] == PY else cmd)}` failed "
                f"(exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc.stdout

    def verifier(self, *args: str, capture: bool = False, check: bool = True) -> str:
        return self.run(
            "verifier",
            *args,
            "--config",
            str(self.work / "verifier.yaml"),
            capture=capture,
            check=check,
        )

    def stop_all(self) -> None:
        for d in self.node_dirs:
            subprocess.run(
                [PY, "-m", "testkit.swtpm", "stop", "--dir", str(d)],
                cwd=ROOT,
                capture_output=True,
                timeout=30,
            )
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _download_debs() -> dict[str, Path]:
    """Debian's signed shim, GRUB and the current amd64 kernel (cached between runs)."""
    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    depends = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, check=True
    ).stdout
    kernel = next(
        (
            line.split(":", 1)[1].strip()
            for line in depends.splitlines()
            if "Depends:" in line and "linux-image-" in line
        ),
        None,
    )
    if kernel is None:
        raise SystemExit("demo: cannot resolve the kernel package behind linux-image-amd64")
    wanted = {"shim": "shim-signed", "grub": "grub-efi-amd64-signed", "kernel": kernel}
    found: dict[str, Path] = {}
    for key, package in wanted.items():
        have = sorted(DEB_CACHE.glob(f"{package}_*.deb"))
        if not have:
            subprocess.run(
                ["apt-get", "download", "-q", package],
                cwd=DEB_CACHE,
                check=True,
                capture_output=True,
            )
            have = sorted(DEB_CACHE.glob(f"{package}_*.deb"))
        if not have:
            raise SystemExit(f"demo: apt-get download {package} gave no .deb")
        found[key] = have[-1]
    return found


def start_verifier(demo: Demo) -> None:
    demo.say(
        "Verifier: SQLite store, EK vendor CA = the swtpm manufacturer CA, plain HTTP on 127.0.0.1"
    )
    vendor = demo.work / "ek-vendor-ca"
    from testkit import swtpm

    # The manufacturer CA exists once the first TPM was provisioned (boot_nodes).
    swtpm.export_ca(demo.work / "ca", vendor)
    port = _free_port()
    (demo.work / "verifier.yaml").write_text(
        f"database: {demo.work / 'verifier.db'}\n"
        f"ek_ca_dir: {vendor}\n"
        f"bind: 127.0.0.1:{port}\n"
        "workers: 2\n"
        "attest_interval: 30\n"
    )
    demo.verifier("db", "upgrade")
    log = open(demo.work / "verifier.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [PY, "-m", "verifier", "serve", "--config", str(demo.work / "verifier.yaml")],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    demo.procs.append(proc)
    demo.url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        if proc.poll() is not None:
            raise SystemExit(f"demo: verifier exited early; see {demo.work / 'verifier.log'}")
        try:
            requests.get(demo.url + "/v1/nodes", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.2)
    else:
        raise SystemExit("demo: the verifier did not start listening")
    demo.admin = json.loads(
        demo.verifier("token", "create", "--role", "admin", "--json", capture=True)
    )["token"]
    demo.record("verifier_started", url=demo.url)
    if not demo.quiet:
        print(f"verifier at {demo.url}")


def build_golden(demo: Demo) -> None:
    demo.say(
        "Golden sets: boot chain and kernel from Debian's packages, firmware and keys by capture"
    )
    debs = _download_debs()
    g = demo.work / "golden"
    g.mkdir()
    demo.run(
        "golden",
        "from-deb",
        str(debs["shim"]),
        str(debs["grub"]),
        "-o",
        str(g / "bootchain.yaml"),
        "--name",
        "debian-bootchain",
        "--version",
        "bookworm",
    )
    kver = debs["kernel"].name.split("_")[0].removeprefix("linux-image-")
    demo.run(
        "golden",
        "from-deb",
        str(debs["kernel"]),
        "-o",
        str(g / "kernel.yaml"),
        "--name",
        "debian-kernel",
        "--version",
        kver,
    )
    sb_log = CORPUS / "qemu-ovmf-debian12/secureboot-shim-grub-kernel.bin"
    demo.run(
        "golden",
        "capture",
        "--from-log",
        str(sb_log),
        "-o",
        str(g / "qemu-firmware.yaml"),
        "--name",
        "qemu-ovmf-firmware",
        "--version",
        "2022.11",
        "--without",
        "boot-apps",
    )
    demo.run(
        "golden",
        "capture",
        "--from-log",
        str(CORPUS / "go-tpm-tools/ubuntu-2104-no-secure-boot.bin"),
        "-o",
        str(g / "gce.yaml"),
        "--name",
        "gce-ubuntu-2104",
        "--version",
        "1",
    )
    demo.run(
        "golden",
        "capture",
        "--from-log",
        str(CORPUS / "keylime/binary_bios_measurements"),
        "-o",
        str(g / "lenovo.yaml"),
        "--name",
        "thinkpad-fedora41",
        "--version",
        "1",
    )
    for name, selector in (
        ("bootchain", "fleet=debian"),
        ("kernel", "fleet=debian"),
        ("qemu-firmware", "fleet=debian"),
        ("gce", "fleet=gce"),
        ("lenovo", "fleet=laptops"),
    ):
        out = demo.verifier("golden", "add", str(g / f"{name}.yaml"), "--json", capture=True)
        set_name = json.loads(out)["name"]
        demo.verifier("golden", "assign", set_name, "--selector", selector, capture=True)
        demo.record("golden_added", set=set_name, selector=selector)
    demo.verifier("golden", "list")
    demo.record("golden_built", kernel=kver)


NODES = [
    Node(
        "debian-sb-1",
        CORPUS / "qemu-ovmf-debian12/secureboot-shim-grub-kernel.bin",
        {"fleet": "debian"},
    ),
    Node("gce-ubuntu-1", CORPUS / "go-tpm-tools/ubuntu-2104-no-secure-boot.bin", {"fleet": "gce"}),
    Node("thinkpad-1", CORPUS / "keylime/binary_bios_measurements", {"fleet": "laptops"}),
    # The same Debian boot, but GRUB (PCR4 event 29) replaced by an unknown EFI application.
    Node(
        "debian-sb-tampered",
        CORPUS / "qemu-ovmf-debian12/secureboot-shim-grub-kernel.bin",
        {"fleet": "debian"},
        replace_event="29:" + "e7" * 32,
    ),
]


def boot_nodes(demo: Demo) -> None:
    demo.say("Nodes: swtpm TPMs with EK certificates from a manufacturer CA, booted from real logs")
    from testkit import swtpm

    swtpm.init_ca(demo.work / "ca")
    for node in NODES:
        node.dir = demo.work / "nodes" / node.name
        node.port = swtpm.free_port_pair()
        node.eventlog = node.dir / "binary_bios_measurements"
        demo.run(
            "testkit.swtpm",
            "provision",
            "--dir",
            str(node.dir),
            "--ca-dir",
            str(demo.work / "ca"),
            capture=True,
        )
        demo.run(
            "testkit.swtpm",
            "start",
            "--dir",
            str(node.dir),
            "--port",
            str(node.port),
            "--no-startup",
            capture=True,
        )
        demo.node_dirs.append(node.dir)
        sim = ["testkit.bootsim", str(node.log), "--tcti", _tcti(node), "--out", str(node.eventlog)]
        if node.replace_event:
            sim += ["--replace-event", node.replace_event]
        demo.run(*sim, capture=True)
        demo.record(
            "node_booted", node=node.name, log=node.log.name, tampered=bool(node.replace_event)
        )
        if not demo.quiet:
            extra = " (GRUB replaced by an unknown EFI application)" if node.replace_event else ""
            print(f"{node.name}: booted {node.log.parent.name}/{node.log.name}{extra}")


def _tcti(node: Node) -> str:
    return f"swtpm:host=127.0.0.1,port={node.port}"


def _agent(demo: Demo, node: Node, command: str, *extra: str) -> dict[str, Any]:
    args = [
        "agent",
        command,
        "--tcti",
        _tcti(node),
        "--state-dir",
        str(node.dir / "agent"),
        "--eventlog",
        str(node.eventlog),
        "--node",
        node.name,
        "--verifier",
        demo.url,
        "--json",
        *extra,
    ]
    out = demo.run(*args, capture=True, check=command == "enroll")
    try:
        doc: dict[str, Any] = json.loads(out)
    except json.JSONDecodeError:
        doc = {"raw": out}
    return doc


def enroll_and_attest(demo: Demo) -> None:
    demo.say(
        "Enrollment (EK certificate chain, credential activation) and attestation with the agent"
    )
    for node in NODES:
        # The operator labels the node through its enrollment token; the node sends none.
        labels = [x for k, v in node.labels.items() for x in ("--label", f"{k}={v}")]
        token = json.loads(
            demo.verifier(
                "token", "create", "--role", "enroll", "--single-use", *labels, "--json",
                capture=True,
            )
        )["token"]  # fmt: skip
        _agent(demo, node, "enroll", "--token", token)
        demo.record("node_enrolled", node=node.name)
        result = _agent(demo, node, "attest")
        demo.record("node_attested", node=node.name, status=result.get("status"))
        if not demo.quiet:
            print(f"{node.name}: {result.get('status')} — {result.get('reason', '')}")


def inventory(demo: Demo) -> list[dict[str, Any]]:
    r = requests.get(
        demo.url + "/v1/nodes", headers={"Authorization": f"Bearer {demo.admin}"}, timeout=10
    )
    r.raise_for_status()
    nodes: list[dict[str, Any]] = r.json()["nodes"]
    return nodes


def show_inventory(demo: Demo, title: str) -> None:
    demo.say(title)
    if not demo.quiet:
        demo.verifier("nodes", "list")


def explain_tampered(demo: Demo) -> None:
    demo.say("Why debian-sb-tampered is not trusted (the failing checks, got vs expected)")
    headers = {"Authorization": f"Bearer {demo.admin}"}
    node = requests.get(
        demo.url + "/v1/nodes/debian-sb-tampered", headers=headers, timeout=10
    ).json()
    att_id = node.get("last_attestation_id") or node.get("last_attestation", {}).get("id")
    verdict = requests.get(
        f"{demo.url}/v1/attestations/{att_id}", headers=headers, timeout=10
    ).json()
    failed = [
        c
        for c in verdict.get("checks", verdict.get("verdict", {}).get("checks", []))
        if c["status"] == "fail"
    ]
    for c in failed:
        demo.record("failed_check", node="debian-sb-tampered", check=c)
        if not demo.quiet:
            print(
                f"- {c['id']} ({c['reason']}) PCR{c.get('pcr')} event {c.get('event')}:\n"
                f"    got      {c.get('got')}\n    expected {c.get('expected')}"
            )


def revoke_kernel(demo: Demo) -> None:
    demo.say("Revoking the golden kernel version (re-appraises stored evidence, no reboot needed)")
    sets = json.loads(demo.verifier("golden", "list", "--json", capture=True))
    kernel = next(s for s in sets["golden"] if s["name"] == "debian-kernel")
    demo.verifier(
        "golden",
        "revoke",
        "debian-kernel",
        kernel["version"],
        "--reason",
        "CVE-2026-12345: kernel must not run cluster workloads",
    )
    demo.record("golden_revoked", set=f"debian-kernel@{kernel['version']}")


def final_json(demo: Demo) -> dict[str, Any]:
    nodes = [
        {
            "name": n["name"],
            "state": n["state"],
            "reason": n.get("reason"),
            "golden": n.get("golden", []),
        }
        for n in inventory(demo)
    ]
    return {"nodes": nodes, "events": demo.events}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.add_argument(
        "--json", action="store_true", help="print the final inventory as one JSON object"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="assay-demo-"))
    demo = Demo(work=work, quiet=args.json)
    try:
        boot_nodes(demo)
        start_verifier(demo)
        build_golden(demo)
        enroll_and_attest(demo)
        show_inventory(demo, "Inventory: what a scheduler sees")
        explain_tampered(demo)
        revoke_kernel(demo)
        show_inventory(demo, "Inventory after the revocation")
        result = final_json(demo)
    finally:
        demo.stop_all()
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\nDemo finished: everything it started is stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
