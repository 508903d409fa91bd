"""The demo behind scripts/demo: the main job on real boots, and a check that it told its story.

Two Debian nodes boot real UEFI virtual machines (QEMU/OVMF with Secure Boot, a swtpm each) built
from the packages Debian ships today (the VM suite's machinery, tests/vm); their golden sets come
from those very .deb files, so golden values and boots always share versions, whatever the archive
holds on the day. Two more nodes replay recorded logs of real machines into swtpm. The agent
enrolls and attests every node against a real verifier. The kernel set has two versions, A (the
generic kernel) and B (the cloud kernel): a rollout. Revoking A must flag the nodes that booted it
at once, without new evidence; one of them then reboots into B and is trusted again.

The story (``_demo_story.SCENARIO``) says beforehand what state and reason code each node must
show after each step; when reality differs the demo says so per node and exits 1. A step that
fails exits 2 naming the step. Every step runs the project's own command lines, as an operator
would (the VM nodes' agent is the agent's own enrollment/attestation code over the TPM the guest
measured into). Everything started here is stopped at the end, also on error or Ctrl-C, and the
work directory is removed unless --keep.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from assay.errors import AssayError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the VM machinery: tests/vm

import _demo_story as story

from tests.vm import builder
from tests.vm.attest import Verifier, VmAgent
from tests.vm.fleet import BackgroundBoots
from tests.vm.runner import BootResult, VmNode

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "eventlogs"
PY = sys.executable
EXIT_MISMATCH, EXIT_STEP_FAILED, EXIT_INTERRUPTED = 1, 2, 130
REVOCATION = "CVE-2026-12345: kernel must not run cluster workloads"
DEBIAN = {"fleet": "debian"}


class DemoError(Exception):
    """A command or a check inside a step failed (the step's name is added by ``main``)."""


@dataclass(frozen=True, slots=True)
class RecordedNode:
    """A node whose boot is a recorded log of a real machine, extended into its own swtpm."""

    name: str
    log: Path
    labels: dict[str, str]
    golden: str  # the set captured from the same machine's log

    @property
    def dir(self) -> Path:
        return Path("nodes") / self.name


@dataclass(frozen=True, slots=True)
class VmSpec:
    """A real VM boot: ``variant`` of tests/vm/builder.py; enrolled unless ``labels`` is None."""

    name: str
    variant: str
    labels: dict[str, str] | None
    role: str


RECORDED = (
    RecordedNode(
        "gce-ubuntu-1",
        CORPUS / "go-tpm-tools/ubuntu-2104-no-secure-boot.bin",
        {"fleet": "gce"},
        "gce-ubuntu-2104",
    ),
    RecordedNode(
        "thinkpad-1", CORPUS / "keylime/binary_bios_measurements", {"fleet": "laptops"},
        "thinkpad-fedora41",
    ),
)  # fmt: skip
VMS = (
    VmSpec("debian-sb-1", "sb", DEBIAN, "shim → GRUB → kernel, Secure Boot on"),
    VmSpec(
        "debian-sb-tampered", "sb-cmdline", DEBIAN,
        "the same chain, but its grub.cfg adds nokaslr to the kernel command line",
    ),
    # Another machine of the same platform, booting the cloud kernel flavour (kernel B of the
    # rollout). It was reviewed once: its platform measurements are captured (firmware, Secure
    # Boot keys, shim's MokList/SbatLevel, the fleet's command line and initrd), none of its boot
    # chain or kernel — those come from the packages alone.
    VmSpec(
        "debian-cloud-1", "sb-cloud", DEBIAN,
        "kernel B (cloud flavour); also the reference machine for the platform capture",
    ),
)  # fmt: skip


@dataclass
class Demo:
    work: Path
    quiet: bool
    events: list[dict[str, Any]] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    verifier_proc: subprocess.Popen[bytes] | None = None
    console: tuple[str, str] | None = None
    """The review console's URL and a reviewer token to sign in with (``console_sign_in``)."""
    swtpm_dirs: list[Path] = field(default_factory=list)
    tcti: dict[str, str] = field(default_factory=dict)  # recorded node -> its swtpm TCTI
    images: dict[str, builder.NodeImage] = field(default_factory=dict)
    boots: BackgroundBoots | None = None
    booted: dict[str, BootResult] = field(default_factory=dict)
    mismatches: list[story.Mismatch] = field(default_factory=list)
    kernels: dict[str, str] = field(default_factory=dict)  # "a"/"b" -> the golden version
    checked: list[dict[str, Any]] = field(default_factory=list)
    seen: dict[str, story.Expect] = field(default_factory=dict)  # at the last story check
    url: str = ""
    admin: str = ""

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"\n== {text}", flush=True)

    def show(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def record(self, what: str, **detail: Any) -> None:
        self.events.append({"t": round(time.time(), 3), "event": what, **detail})

    def run(self, *args: str, capture: bool = False) -> str:
        """Run one of the project's commands (``python -m ARGS``); show its output unless
        --json; a non-zero exit is a DemoError with its stderr."""
        cmd = [PY, "-m", *args]
        env = {**os.environ, "COLUMNS": "160"}  # tables are read in a log, not a narrow pipe
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            raise DemoError(f"`{' '.join(args)}` did not finish within 300 s") from None
        if not capture and proc.stdout.strip():
            self.show(proc.stdout.rstrip())
        if proc.returncode != 0:
            raise DemoError(
                f"`{' '.join(args)}` failed (exit {proc.returncode}): "
                f"{proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc.stdout

    def verifier(self, *args: str, capture: bool = False) -> str:
        config = str(self.work / "verifier.yaml")
        return self.run("verifier", *args, "--config", config, capture=capture)

    def api(self, path: str) -> Any:
        r = requests.get(
            f"{self.url}/v1{path}", headers={"Authorization": f"Bearer {self.admin}"}, timeout=30
        )
        if r.status_code != 200:
            raise DemoError(f"GET /v1{path}: {r.status_code} {r.text[:200]}")
        return r.json()

    def stop_all(self, *, keep_verifier: bool = False) -> None:
        """Stop every VM, swtpm and server started here, by the pids started (errors ignored:
        the rest must still be stopped); with ``keep_verifier`` the verifier stays up."""
        if self.boots is not None:
            self.boots.close()
        for d in self.swtpm_dirs:
            subprocess.run(
                [PY, "-m", "testkit.swtpm", "stop", "--dir", str(d)],
                cwd=ROOT,
                capture_output=True,
                timeout=30,
                check=False,
            )
        for proc in self.procs:
            if keep_verifier and proc is self.verifier_proc:
                continue
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


# -- steps ---------------------------------------------------------------------------------------


def _deb(deb: Path) -> str:
    fields = builder.run(["dpkg-deb", "-f", str(deb), "Package", "Version"], f"reading {deb.name}")
    info = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
    return f"{info.get('Package', deb.name)} {info.get('Version', '?')}"


def build_images(demo: Demo) -> None:
    """Resolve today's versions through apt, fetch what the cache lacks, build what changed."""
    builder.ensure_host()
    cache = builder.cache_dir()
    demo.show(f"cache: {cache}")
    for vm in VMS:
        started = time.monotonic()
        image = builder.build(builder.VARIANTS[vm.variant], cache)
        demo.images[vm.name] = image
        demo.show(f"{vm.name}: image {vm.variant} ready in {time.monotonic() - started:.1f} s")
    packages = {p: _deb(p) for image in demo.images.values() for p in image.packages}
    for what in sorted(packages.values()):
        demo.show(f"  {what}")
    demo.record("images_built", packages=sorted(packages.values()))


def start_boots(demo: Demo) -> None:
    from testkit import swtpm

    swtpm.init_ca(demo.work / "ca")
    nodes = {
        vm.name: VmNode(demo.images[vm.name], demo.work / "vm" / vm.name, demo.work / "ca")
        for vm in VMS
    }
    # Every QEMU keeps a core busy under TCG; all of them at once finishes first on two cores.
    demo.boots = BackgroundBoots(nodes, parallel=len(nodes))
    demo.boots.start()
    for vm in VMS:
        demo.show(f"booting {vm.name} ({vm.variant}: {vm.role})…")
    demo.record("vm_boots_started", nodes=[vm.name for vm in VMS])


def boot_recorded(demo: Demo) -> None:
    from testkit import swtpm

    for node in RECORDED:
        directory = demo.work / node.dir
        demo.run(
            "testkit.swtpm", "provision", "--dir", str(directory),
            "--ca-dir", str(demo.work / "ca"), capture=True,
        )  # fmt: skip
        port = swtpm.free_port_pair()
        demo.run(
            "testkit.swtpm", "start", "--dir", str(directory), "--port", str(port), "--no-startup",
            capture=True,
        )  # fmt: skip
        demo.swtpm_dirs.append(directory)
        demo.tcti[node.name] = f"swtpm:host=127.0.0.1,port={port}"
        demo.run(
            "testkit.bootsim", str(node.log), "--tcti", demo.tcti[node.name],
            "--out", str(directory / "binary_bios_measurements"), capture=True,
        )  # fmt: skip
        demo.record("node_booted", node=node.name, log=node.log.name)
        demo.show(f"{node.name}: booted {node.log.parent.name}/{node.log.name}")


def start_verifier(demo: Demo) -> None:
    from testkit import swtpm

    vendor = demo.work / "ek-vendor-ca"
    swtpm.export_ca(demo.work / "ca", vendor)  # the CA exists once the first TPM is made
    port = _free_port()
    (demo.work / "verifier.yaml").write_text(
        f"database: {demo.work / 'verifier.db'}\n"
        f"ek_ca_dir: {vendor}\n"
        f"bind: 127.0.0.1:{port}\n"
        "workers: 2\n"
        "attest_interval: 60\n"
        "extender_enabled: true\n"
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
    demo.verifier_proc = proc
    demo.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise DemoError(f"the verifier exited early; see {demo.work / 'verifier.log'}")
        try:
            requests.get(demo.url + "/v1/nodes", timeout=1)
            break
        except requests.RequestException:  # not listening yet, or no worker answering yet
            if time.monotonic() > deadline:
                raise DemoError("the verifier did not start listening within 60 s") from None
            time.sleep(0.2)
    demo.admin = json.loads(
        demo.verifier("token", "create", "--role", "admin", "--json", capture=True)
    )["token"]
    demo.record("verifier_started", url=demo.url)
    demo.show(f"verifier at {demo.url}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _add_golden(demo: Demo, path: Path, selector: dict[str, str], source: str) -> str:
    out = json.loads(demo.verifier("golden", "add", str(path), "--json", capture=True))
    name = str(out["name"])
    labels = [x for k, v in selector.items() for x in ("--selector", f"{k}={v}")]
    demo.verifier("golden", "assign", name, *labels, capture=True)
    demo.record("golden_added", set=name, selector=selector)
    where = ",".join(f"{k}={v}" for k, v in selector.items())
    demo.show(f"{out['id']} ({source}) → nodes labelled {where}")
    return name


def _codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"') or "1"
    return "1"


def golden_from_packages(demo: Demo) -> None:
    """The boot chain and the two kernel versions of the rollout from the .debs the images were
    built from — A the generic kernel (debian-sb-1 and the tampered node boot it), B the cloud
    kernel (debian-cloud-1), B added last; the recorded machines by capture."""
    g = demo.work / "golden"
    g.mkdir()
    image, cloud = demo.images["debian-sb-1"], demo.images["debian-cloud-1"]
    if demo.images["debian-sb-tampered"].packages != image.packages:
        raise DemoError("the two Debian nodes' images were built from different packages")
    shim, grub, kernel = image.packages
    if cloud.packages[:2] != (shim, grub):
        raise DemoError("the cloud image was built from another shim or GRUB")
    demo.run(
        "golden", "from-deb", str(shim), str(grub), "-o", str(g / "bootchain.yaml"),
        "--name", "debian-bootchain", "--version", _codename(),
    )  # fmt: skip
    _add_golden(demo, g / "bootchain.yaml", DEBIAN, f"from-deb {shim.name} {grub.name}")
    for label, deb in (("a", kernel), ("b", cloud.packages[2])):
        kver = _deb(deb).split()[0].removeprefix("linux-image-")
        demo.kernels[label] = kver
        demo.run(
            "golden", "from-deb", str(deb), "-o", str(g / f"kernel-{label}.yaml"),
            "--name", "debian-kernel", "--version", kver,
        )  # fmt: skip
        _add_golden(demo, g / f"kernel-{label}.yaml", DEBIAN, f"kernel {label.upper()}: {deb.name}")
    for node in RECORDED:
        out = g / f"{node.golden}.yaml"
        demo.run(
            "golden", "capture", "--from-log", str(node.log), "-o", str(out),
            "--name", node.golden, "--version", "1",
        )  # fmt: skip
        _add_golden(demo, out, node.labels, f"capture of {node.log.name}")
    demo.record("golden_built", kernels=dict(demo.kernels))


def wait_boots(demo: Demo) -> None:
    assert demo.boots is not None

    def done(name: str, result: BootResult) -> None:
        demo.show(
            f"{name}: powered off after {result.seconds:.0f} s, event log {len(result.event_log)}"
            f" bytes; the kernel saw: {result.guest_cmdline}"
        )
        demo.record("vm_booted", node=name, seconds=round(result.seconds, 1))

    def tick(pending: Sequence[str], seconds: float) -> None:
        demo.show(f"… still booting after {seconds:.0f} s: {', '.join(pending)}")

    demo.booted = demo.boots.wait(done, on_tick=tick)


def golden_platform(demo: Demo) -> None:
    assert demo.boots is not None
    ref = demo.boots.nodes["debian-cloud-1"].eventlog_path
    out = demo.work / "golden" / "platform.yaml"
    ovmf = builder.run(["dpkg-query", "-W", "-f", "${Version}", "ovmf"], "dpkg-query ovmf")
    demo.run(
        "golden", "capture", "--from-log", str(ref), "--without", "boot-apps",
        "-o", str(out), "--name", "qemu-ovmf-platform", "--version", ovmf.strip(),
    )  # fmt: skip
    _add_golden(demo, out, DEBIAN, "capture --without boot-apps of debian-cloud-1's boot")
    demo.verifier("golden", "list")


def _enroll_token(demo: Demo, labels: dict[str, str]) -> str:
    # The operator labels the node through its enrollment token; the node sends none.
    flags = [x for k, v in labels.items() for x in ("--label", f"{k}={v}")]
    out = demo.verifier(
        "token", "create", "--role", "enroll", "--single-use", *flags, "--json", capture=True
    )
    return str(json.loads(out)["token"])


def _agent_cli(demo: Demo, node: RecordedNode, command: str, *extra: str) -> dict[str, Any]:
    directory = demo.work / node.dir
    args = [
        "agent", command, "--tcti", demo.tcti[node.name], "--state-dir", str(directory / "agent"),
        "--eventlog", str(directory / "binary_bios_measurements"), "--node", node.name,
        "--verifier", demo.url, "--json", *extra,
    ]  # fmt: skip
    cmd = [PY, "-m", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    try:
        doc: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise DemoError(
            f"`agent {command}` for {node.name} (exit {proc.returncode}): "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        ) from None
    if command == "enroll" and proc.returncode != 0:
        raise DemoError(f"`agent enroll` for {node.name} failed: {proc.stderr.strip()}")
    return doc


def enroll_and_attest(demo: Demo) -> None:
    assert demo.boots is not None
    v = Verifier(demo.url, demo.admin, enroll_token="")
    for vm in VMS:
        if vm.labels is None:
            continue
        agent = _vm_agent(demo, v, vm, _enroll_token(demo, vm.labels))
        try:
            agent.enroll()
            demo.record("node_enrolled", node=vm.name)
            result = agent.attest()
        finally:
            agent.close()
        demo.record("node_attested", node=vm.name, status=result.status)
        demo.show(f"{vm.name}: {result.status} — {result.reason}")
    for node in RECORDED:
        _agent_cli(demo, node, "enroll", "--token", _enroll_token(demo, node.labels))
        demo.record("node_enrolled", node=node.name)
        doc = _agent_cli(demo, node, "attest")
        demo.record("node_attested", node=node.name, status=doc.get("status"))
        demo.show(f"{node.name}: {doc.get('status')} — {doc.get('reason', '')}")


def _vm_agent(demo: Demo, v: Verifier, vm: VmSpec, token: str) -> VmAgent:
    assert demo.boots is not None and vm.labels is not None
    state = demo.work / "vm" / f"{vm.name}-agent"
    return VmAgent(demo.boots.nodes[vm.name], v, vm.name, vm.labels, state, enroll_token=token)


def inventory(demo: Demo) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = demo.api("/nodes")["nodes"]
    return nodes


def check_story(demo: Demo, step: str) -> None:
    """Compare the inventory with the scenario's checkpoint; keep every difference."""
    cp = story.checkpoint(step)
    inv = inventory(demo)
    wrong = story.compare(cp, inv)
    demo.mismatches += wrong
    got = story.observed(inv)
    demo.checked.append({"step": step, "ok": not wrong, "mismatches": [m.line() for m in wrong]})
    demo.show(f"story check — {cp.title}:")
    bad = {m.node for m in wrong}
    absent = story.Expect(story.ABSENT, story.NO_REASON)
    for name in sorted(set(cp.nodes) | set(got)):
        expected, seen = cp.nodes.get(name, absent), got.get(name, absent)
        mark = "DIFFERS" if name in bad else "as expected"
        before = demo.seen.get(name)
        change = f" (was {before})" if before is not None and before != seen else ""
        demo.show(f"  {name:20} expected {expected!s:34} got {seen!s:34} {mark}{change}")
    demo.seen = got


def check_outdated(demo: Demo, step: str) -> None:
    """`nodes list --outdated` must name exactly the nodes the story says at ``step``."""
    listed = json.loads(demo.verifier("nodes", "list", "--outdated", "--json", capture=True))
    names = [n["name"] for n in listed["nodes"]]
    wrong = story.compare_outdated(step, names)
    demo.mismatches += wrong
    demo.checked.append(
        {"step": f"{step}: outdated", "ok": not wrong, "mismatches": [m.line() for m in wrong]}
    )
    for n in listed["nodes"]:
        why = ", ".join(f"{o['version']} {o['why']}" for o in n["outdated"])
        demo.show(f"  outdated: {n['name']:20} {why}")
    for m in wrong:
        demo.show("  " + m.line())


def show_inventory(demo: Demo) -> None:
    demo.verifier("nodes", "list")
    check_story(demo, "attested")
    demo.verifier("golden", "rollout", "debian-kernel")
    check_outdated(demo, "attested")


def explain_tampered(demo: Demo) -> None:
    node = demo.api("/nodes/debian-sb-tampered")
    verdict = demo.api(f"/attestations/{node['last_attestation_id']}")["verdict"]
    for c in verdict["checks"]:
        if c["status"] != "fail":
            continue
        demo.record("failed_check", node="debian-sb-tampered", check=c)
        demo.show(
            f"- {c['id']} ({c['reason']}) PCR{c.get('pcr')} event {c.get('event')}:\n"
            f"    got      {c.get('got')}\n    expected {c.get('expected')}"
        )


def ear_offline(demo: Demo) -> None:
    """A relying party fetches nodes' EARs and checks them offline against the JWKS."""
    scheduler = json.loads(
        demo.verifier("token", "create", "--role", "scheduler", "--json", capture=True)
    )["token"]
    jwks = demo.work / "jwks.json"
    jwks.write_text(requests.get(f"{demo.url}/v1/keys", timeout=30).text)
    wrongs: list[story.Mismatch] = []
    for expect in story.EAR_CHECKS:
        r = requests.get(
            f"{demo.url}/v1/nodes/{expect.node}/ear",
            headers={"Authorization": f"Bearer {scheduler}"},
            timeout=30,
        )
        if r.status_code != 200:
            raise DemoError(f"GET /v1/nodes/{expect.node}/ear: {r.status_code} {r.text[:200]}")
        token = demo.work / f"{expect.node}.ear.jwt"
        token.write_text(r.text)
        args = ["verifier", "ear", "verify", f"@{token}", "--jwks", str(jwks)]
        proc = subprocess.run(
            [PY, "-m", *args, "--node", expect.node, "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            raise DemoError(f"ear verify printed no JSON: {proc.stderr.strip()}") from None
        wrong = story.compare_ear(expect, proc.returncode, result)
        wrongs += wrong
        mark = "DIFFERS" if wrong else "as expected"
        demo.show(
            f"  ear verify {expect.node:20} exit {proc.returncode}, {result.get('status')}"
            f" (expected exit {expect.exit_code}, {expect.status}) {mark}"
        )
        demo.record("ear_verified", node=expect.node, exit=proc.returncode, result=result)
    demo.mismatches += wrongs
    demo.checked.append({"step": "ear", "ok": not wrongs, "mismatches": [m.line() for m in wrongs]})


def extender_filter(demo: Demo) -> None:
    """kube-scheduler's question, in its own wire format: which of these nodes may run a pod?"""
    names = sorted(n["name"] for n in inventory(demo))
    body = {"Pod": {"metadata": {"name": "web-0", "namespace": "default"}}, "NodeNames": names}
    r = requests.post(f"{demo.url}/k8s/extender/filter", json=body, timeout=30)
    if r.status_code != 200:
        raise DemoError(f"POST /k8s/extender/filter: {r.status_code} {r.text[:200]}")
    result = r.json()
    wrong = story.compare_extender(result)
    demo.mismatches += wrong
    demo.show(f"  passed: {', '.join(result['NodeNames']) or '-'}")
    for node, why in sorted(result["FailedAndUnresolvableNodes"].items()):
        demo.show(f"  filtered out: {node:20} {why[:100]}")
    for m in wrong:
        demo.show("  " + m.line())
    demo.checked.append(
        {"step": "extender", "ok": not wrong, "mismatches": [m.line() for m in wrong]}
    )
    demo.record("extender_filter", result=result)


def revoke_kernel(demo: Demo) -> None:
    version = demo.kernels["a"]
    demo.verifier("golden", "revoke", "debian-kernel", version, "--reason", REVOCATION)
    demo.record("golden_revoked", set=f"debian-kernel@{version}")
    check_story(demo, "revoked")  # at once: no node has attested since
    check_outdated(demo, "revoked")


def roll_forward(demo: Demo) -> None:
    """debian-sb-1's VM reboots into kernel B on the same TPM (its identity), and attests."""
    assert demo.boots is not None
    node = demo.boots.nodes["debian-sb-1"]
    demo.show("debian-sb-1: rebooting into kernel B…")
    result = node.reboot(demo.images["debian-cloud-1"])
    demo.show(f"debian-sb-1: powered off after {result.seconds:.0f} s; the kernel saw: "
              f"{result.guest_cmdline}")  # fmt: skip
    vm = next(vm for vm in VMS if vm.name == "debian-sb-1")
    agent = _vm_agent(demo, Verifier(demo.url, demo.admin, enroll_token=""), vm, "unused")
    try:
        attested = agent.attest()
    finally:
        agent.close()
    demo.record("node_attested", node=vm.name, status=attested.status, after="roll forward")
    demo.show(f"debian-sb-1: {attested.status} — {attested.reason}")
    demo.verifier("golden", "rollout", "debian-kernel")
    check_story(demo, "rolled-forward")
    check_outdated(demo, "rolled-forward")


def show_final(demo: Demo) -> None:
    demo.verifier("nodes", "list")


def console_sign_in(demo: Demo) -> None:
    """A reviewer token for the review console (docs/console.md), printed at the end."""
    token = json.loads(
        demo.verifier(
            "token", "create", "--role", "reviewer", "--description", "demo reviewer", "--json",
            capture=True,
        )
    )["token"]  # fmt: skip
    demo.console = (f"{demo.url}/ui/", token)
    demo.record("console", url=demo.console[0])
    demo.show(f"review console at {demo.console[0]} (reviewer token created)")


Step = tuple[str, Callable[[Demo], None]]  # (title, what it does)

STEPS: tuple[Step, ...] = (
    ("Node images from the packages Debian ships today (apt resolves the versions)", build_images),
    ("TPMs with EK certificates from a manufacturer CA; the VMs boot in the background "
     "(QEMU/OVMF, Secure Boot on, no KVM)", start_boots),
    ("Recorded nodes: real machines' event logs extended into swtpm", boot_recorded),
    ("Verifier: SQLite store, EK vendor CA = the swtpm manufacturer CA, HTTP on 127.0.0.1",
     start_verifier),
    ("Golden sets: boot chain and kernel from the very .debs the VM images hold; the recorded "
     "machines by capture", golden_from_packages),
    ("Waiting for the VM boots", wait_boots),
    ("Golden platform set: the reference machine's boot, captured without its boot applications",
     golden_platform),
    ("Enrollment (EK certificate chain, credential activation) and attestation with the agent",
     enroll_and_attest),
    ("Inventory: what a scheduler sees", show_inventory),
    ("Why debian-sb-tampered is not trusted (the failing checks, got vs expected)",
     explain_tampered),
    ("A relying party checks signed results (EAR) offline with `assay-verifier ear verify`",
     ear_offline),
    ("The Kubernetes scheduler extender: which nodes may run a pod", extender_filter),
    ("Revoking kernel A (re-appraises stored evidence, no reboot needed)", revoke_kernel),
    ("Rolling debian-sb-1 forward: it reboots into kernel B", roll_forward),
    ("The final inventory", show_final),
    ("The review console: a reviewer sign-in", console_sign_in),
)  # fmt: skip


class StepFailed(Exception):
    def __init__(self, number: int, total: int, title: str, cause: BaseException) -> None:
        # our own errors say what failed; anything else also says what kind of error it was
        ours = isinstance(cause, DemoError | AssayError)
        detail = str(cause) if ours else f"{type(cause).__name__}: {cause}"
        super().__init__(f'demo: step {number}/{total} "{title}" failed: {detail}')


def run_steps(demo: Demo, steps: Sequence[Step]) -> None:
    for number, (title, fn) in enumerate(steps, 1):
        demo.say(f"{number}. {title}")
        started = time.monotonic()
        try:
            fn(demo)
        except Exception as exc:  # any failure ends the demo, naming the step
            raise StepFailed(number, len(steps), title, exc) from exc
        demo.record("step_done", step=number, seconds=round(time.monotonic() - started, 1))


def final_json(demo: Demo, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    expected = story.final().nodes
    absent = story.Expect(story.ABSENT, story.NO_REASON)
    return {
        "nodes": [
            {
                "name": n["name"],
                "state": n["state"],
                "reason": n.get("reason"),
                "golden": n.get("golden", []),
                "expected": expected.get(n["name"], absent).to_json(),
            }
            for n in nodes
        ],
        "events": demo.events,
        "story": demo.checked,
        "ok": not demo.mismatches,
    }


def main(argv: Sequence[str] | None = None, steps: Sequence[Step] = STEPS) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.add_argument(
        "--json", action="store_true", help="print the final inventory as one JSON object"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the work directory and the verifier running (the review console) until Ctrl-C",
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="assay-demo-"))
    demo = Demo(work=work, quiet=args.json)
    started = time.monotonic()
    result: dict[str, Any] | None = None
    code = 0
    try:
        run_steps(demo, steps)
        result = final_json(demo, inventory(demo))
    except StepFailed as exc:
        print(exc, file=sys.stderr)
        code = EXIT_STEP_FAILED
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    finally:
        demo.stop_all(keep_verifier=args.keep and code == 0)
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if result is not None:
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"\nDemo finished in {time.monotonic() - started:.0f} s: everything it started "
                  "is stopped.")  # fmt: skip
    for m in demo.mismatches:
        print(m.line(), file=sys.stderr)
    if code == 0 and demo.mismatches:
        code = EXIT_MISMATCH
    if code == 0 and not args.json:
        print("The story held: every node ended in the state and reason the scenario expects.")
    if demo.console is not None:
        url, token = demo.console
        print(f"\nReview console: {url}\nSign in with this reviewer token: {token}")
    if args.keep and demo.verifier_proc is not None and demo.verifier_proc.poll() is None:
        _serve_until_interrupted(demo)
    return code


def _serve_until_interrupted(demo: Demo) -> None:
    """--keep: the verifier stays up for a person to open the console; Ctrl-C stops it."""
    assert demo.verifier_proc is not None
    print(
        f"The verifier keeps running (pid {demo.verifier_proc.pid}); Ctrl-C stops it.", flush=True
    )
    try:
        demo.verifier_proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        demo.stop_all()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: everything started is stopped


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in background
    sys.exit(main())
