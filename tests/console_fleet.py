"""A small fleet for the review console's tests: a real verifier (gunicorn, SQLite) and swtpm
nodes booted from the real Secure Boot corpus log, enrolled and attested by the agent's own code
over HTTP. Nothing is mocked; the tampered nodes booted a kernel the golden set does not know.

Every node-supplied string the console shows is hostile here: the operator's label value on the
enroll token and the tampered kernel's device path carry ``<script>`` and ``"><img onerror=…>``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from agent.client import VerifierClient
from agent.config import AgentConfig
from agent.node import attest, enroll
from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.yamlfmt import dump_yaml
from testkit import swtpm
from testkit.bootsim import replace_events, simulate_boot
from testkit.service import run_server
from verifier.service import ServiceConfig
from verifier.store import Store, repo, upgrade

from .conftest import CORPUS

SB_LOG_PATH = CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin"
HOSTILE_LABEL = '<script>alert("label")</script>"><img src=x onerror=alert(1)>'
HOSTILE_PATH = '\\EFI\\<script>alert("path")</script>"><img src=x onerror=alert(2)>.efi'
ROLES = ("admin", "admin2", "reviewer", "scheduler")


def kernel_index(log: bytes) -> int:
    """The kernel: the last boot application (PCR4) of the corpus log."""
    apps = [
        e for e in parse_event_log(log).events if e.type_name == "EV_EFI_BOOT_SERVICES_APPLICATION"
    ]
    return apps[-1].index


def image_load_event(path: str) -> bytes:
    """A UEFI_IMAGE_LOAD_EVENT whose device path is one file-path node naming ``path``."""
    name = (path + "\x00").encode("utf-16-le")
    node = struct.pack("<BBH", 4, 4, 4 + len(name)) + name
    device_path = node + struct.pack("<BBH", 0x7F, 0xFF, 4)
    return struct.pack("<QQQQ", 0x1000, 0x200000, 0, len(device_path)) + device_path


def tampered_log(log: bytes) -> bytes:
    """The corpus log with the kernel's event replaced: an unknown kernel with a hostile path."""
    out, _ = replace_events(log, {kernel_index(log): image_load_event(HOSTILE_PATH)})
    return out


@dataclass
class Fleet:
    url: str
    db: str
    tokens: dict[str, str]
    log: bytes
    bad_log: bytes
    base: Path
    nodes: dict[str, AgentConfig] = field(default_factory=dict)
    tpms: dict[str, swtpm.SwtpmNode] = field(default_factory=dict)

    def api(self, path: str, role: str = "admin") -> requests.Response:
        return requests.get(
            self.url + path, headers={"Authorization": f"Bearer {self.tokens[role]}"}, timeout=30
        )

    def post(self, path: str, body: object, role: str = "admin") -> requests.Response:
        return requests.post(
            self.url + path,
            json=body,
            headers={"Authorization": f"Bearer {self.tokens[role]}"},
            timeout=60,
        )

    def boot(self, name: str, log: bytes) -> None:
        """(Re)boot node ``name``'s TPM into ``log`` (a reboot: a new TPM reset count)."""
        tpm = self.tpms[name]
        swtpm.stop(tpm)
        self.tpms[name] = tpm = swtpm.start(tpm, startup=False)
        simulate_boot(tpm.tcti, log, eventlog_out=tpm.eventlog)
        self.nodes[name] = AgentConfig(
            tcti=tpm.tcti,
            state_dir=self.nodes[name].state_dir,
            eventlog=tpm.eventlog,
            verifier=self.url,
            node=name,
            enroll_token=self.nodes[name].enroll_token,
        )

    def add_node(self, name: str, log: bytes) -> None:
        own = swtpm.provision(self.base / f"tpm-{name}", self.base / "ca")
        tpm = swtpm.start(own, startup=False)
        self.tpms[name] = tpm
        simulate_boot(tpm.tcti, log, eventlog_out=tpm.eventlog)
        made = self.post(
            "/v1/tokens",
            {"role": "enroll", "labels": {"pool": "web", "owner": HOSTILE_LABEL}, "ttl": 3600},
        )
        assert made.status_code == 201, made.text
        config = AgentConfig(
            tcti=tpm.tcti,
            state_dir=self.base / f"agent-{name}",
            eventlog=tpm.eventlog,
            verifier=self.url,
            node=name,
            enroll_token=made.json()["token"],
        )
        self.nodes[name] = config
        enroll(config, self.client())

    def attest(self, name: str) -> str:
        result = attest(self.nodes[name], self.client())
        return str(result.status)

    def client(self) -> VerifierClient:
        return VerifierClient(self.url, timeout=60)

    def stop(self) -> None:
        for tpm in self.tpms.values():
            swtpm.stop(tpm)


def start_fleet(base: Path, **config: object) -> Iterator[Fleet]:
    """A verifier with golden set ``fleet@1`` (captured from the corpus log) for ``pool=web``,
    tokens of each role, and: ``good-1`` (trusted), ``bad-1`` (trusted, then rebooted into the
    tampered kernel), ``bad-2`` (the tampered kernel from the start)."""
    (base / "ca").mkdir(parents=True)
    swtpm.provision(base / "factory", base / "ca")
    swtpm.export_ca(base / "ca", base / "vendor-ca")
    db = str(base / "verifier.db")
    store = Store(db)
    upgrade(store)
    tokens: dict[str, str] = {}
    with store.write() as s:
        for role in ROLES:
            tokens[role], _ = repo.create_token(s, role.rstrip("2"), expires_at=None)
    store.close()
    log = SB_LOG_PATH.read_bytes()
    cfg = ServiceConfig(database=db, ek_ca_dir=str(base / "vendor-ca"), workers=2, **config)  # type: ignore[arg-type]
    with run_server(cfg) as url:
        fleet = Fleet(url, db, tokens, log, tampered_log(log), base)
        try:
            _golden(fleet)
            for name in ("good-1", "bad-1"):
                fleet.add_node(name, log)
                assert fleet.attest(name) == "trusted"
            fleet.boot("bad-1", fleet.bad_log)
            assert fleet.attest("bad-1") == "untrusted"
            fleet.add_node("bad-2", fleet.bad_log)
            assert fleet.attest("bad-2") == "untrusted"
            yield fleet
        finally:
            fleet.stop()


def _golden(fleet: Fleet) -> None:
    gs = capture(
        assume_quoted_for_review(parse_event_log(fleet.log), HashAlg.SHA256),
        name="fleet",
        version="1",
    )
    resp = requests.post(
        fleet.url + "/v1/golden",
        data=dump_yaml(gs),
        headers={
            "Authorization": f"Bearer {fleet.tokens['admin']}",
            "Content-Type": "application/yaml",
        },
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    assert fleet.post("/v1/golden/assignments", {"golden": "fleet", "selector": {"pool": "web"}}).ok
