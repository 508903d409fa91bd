"""Incremental IMA end to end: the verifier under gunicorn over real HTTP, swtpm nodes booted from a
real log, the real agent (``agent.node``) reading an IMA list from a file. The list is MADE to the
kernel's format (tests/imalogbuilder.py) and every entry is extended into the swtpm's PCR10 in each
bank as the kernel would (per-bank template digests), so the quote is the TPM's own.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.client import AttestationResult, VerifierClient
from agent.config import AgentConfig
from agent.node import attest, enroll, run
from agent.tpm import Tpm
from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from assay.evidence import decode_evidence
from golden.capture import capture
from golden.yamlfmt import dump_yaml
from testkit import swtpm
from testkit.bootsim import simulate_boot
from testkit.service import run_server
from verifier.service import ServiceConfig
from verifier.store import Store, upgrade

from . import imalogbuilder as made
from .conftest import CORPUS
from .test_runtime_attestation import prog, runtime_yaml

pytestmark = pytest.mark.swtpm

SB_LOG = (CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin").read_bytes()
BANKS = (HashAlg.SHA1, HashAlg.SHA256)


@dataclass
class Env:
    url: str
    db: str
    base: Path

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "verifier", *args, "--database", self.db],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return out.stdout

    def token(self, role: str, *labels: str) -> str:
        extra = [x for label in labels for x in ("--label", label)]
        out = json.loads(self.cli("token", "create", "--role", role, *extra, "--json"))
        return str(out["token"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("ima-e2e")
    swtpm.provision(base / "factory" / "tpm", base / "ca")  # makes the CA
    swtpm.export_ca(base / "ca", base / "vendor-ca")
    db = str(base / "verifier.db")
    upgrade(Store(db))
    golden = capture(
        assume_quoted_for_review(parse_event_log(SB_LOG), HashAlg.SHA256), name="boot", version="1"
    )
    (base / "golden.yaml").write_text(dump_yaml(golden))
    (base / "runtime.yaml").write_text(runtime_yaml(n=50))
    config = ServiceConfig(database=db, ek_ca_dir=str(base / "vendor-ca"), workers=2)
    with run_server(config) as url:
        e = Env(url, db, base)
        e.cli("golden", "add", str(base / "golden.yaml"))
        e.cli("golden", "assign", "boot")
        e.cli("runtime", "add", str(base / "runtime.yaml"), "--selector", "group=ima")
        yield e


class RecordingClient(VerifierClient):
    """The agent's own client, keeping every bundle it sent (to count what went over the wire)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout=30)
        self.bundles: list[bytes] = []

    def submit(self, node: str, bundle: bytes) -> AttestationResult:
        self.bundles.append(bundle)
        return super().submit(node, bundle)

    def sent(self) -> list[tuple[int, int]]:
        """(ima_start, IMA bytes) of each bundle sent."""
        out = []
        for b in self.bundles:
            ev = decode_evidence(b)
            out.append((ev.ima_start, len(ev.ima_log or b"")))
        return out


@dataclass
class ImaNode:
    tpm: swtpm.SwtpmNode
    config: AgentConfig
    client: RecordingClient
    entries: list[made.Made] = field(default_factory=list)

    @property
    def ima_path(self) -> Path:
        assert self.config.ima_log is not None
        return self.config.ima_log

    def boot(self) -> None:
        """(Re)start the swtpm, extend the boot log, start the IMA list at boot_aggregate."""
        self.tpm = swtpm.start(self.tpm, port=self.tpm.port, startup=False)
        simulate_boot(self.tpm.tcti, SB_LOG, eventlog_out=self.tpm.eventlog)
        with Tpm(self.tpm.tcti) as t:
            _, values = t.pcr_read({HashAlg.SHA256: tuple(range(10))})
        self.entries = []
        self.ima_path.write_bytes(b"")
        self.measure(made.boot_aggregate_entry(values[HashAlg.SHA256]))

    def measure(self, *entries: made.Made, write: bool = True) -> None:
        """The kernel measures: PCR10 is extended in each bank, the entry appended to the list
        (``write=False``: extended but left out of the list the agent reads — a lying list)."""
        with Tpm(self.tpm.tcti) as t:
            for e in entries:
                t.pcr_extend(10, {alg: alg.hash(e.hashed()) for alg in BANKS})
        if write:
            self.entries.extend(entries)
            self.ima_path.write_bytes(made.binary(self.entries))


@pytest.fixture()
def make_node(env: Env, tmp_path: Path) -> Iterator[object]:
    started: list[ImaNode] = []
    counter = iter(range(100))

    def make(group: str = "ima") -> ImaNode:
        n = next(counter)
        tpm = swtpm.provision(tmp_path / f"tpm{n}", env.base / "ca", banks="sha1,sha256")
        config = AgentConfig(
            tcti="swtpm:port=0",  # set once the swtpm listens
            state_dir=tmp_path / f"agent{n}",
            eventlog=tpm.eventlog,
            ima_log=tmp_path / f"ima{n}.bin",
            verifier=env.url,
            node=f"ima-{tmp_path.name[-10:]}-{n}",
            enroll_token=env.token("enroll", f"group={group}"),
        )
        node = ImaNode(tpm, config, RecordingClient(env.url))
        node.boot()
        node.config = dataclasses.replace(config, tcti=node.tpm.tcti)
        started.append(node)
        return node

    yield make
    for node in started:
        swtpm.stop(node.tpm)


def test_the_real_agent_sends_only_new_entries_in_steady_state(make_node: object) -> None:
    node = make_node()  # type: ignore[operator]
    node.measure(*(prog(i) for i in range(5)))
    enroll(node.config, node.client)
    assert attest(node.config, node.client).status == "trusted"
    full = len(node.ima_path.read_bytes())
    node.measure(*(prog(i) for i in range(5, 8)))
    second = attest(node.config, node.client)
    assert second.status == "trusted", second.reason
    new = len(made.binary([prog(i) for i in range(5, 8)]))
    assert node.client.sent() == [(0, full), (6, new)]
    stats = run(node.config, node.client, iterations=3, sleep=lambda _: None)
    assert stats.attestations == 3 and stats.last is not None and stats.last.status == "trusted"
    # steady state: nothing new measured, nothing re-sent
    assert node.client.sent()[2:] == [(9, 0)] * 3
    sizes = [len(b) for b in node.client.bundles]
    print(f"\nbundle bytes: first {sizes[0]} (IMA {full}), 3 new entries {sizes[1]} (IMA {new}), "
          f"steady state {sizes[2:]} (IMA 0)")  # fmt: skip


def test_an_unknown_binary_executed_on_a_real_tpm_is_untrusted_naming_it(make_node: object) -> None:
    node = make_node()  # type: ignore[operator]
    enroll(node.config, node.client)
    assert attest(node.config, node.client).status == "trusted"
    node.measure(made.file_entry(b"/tmp/dropper", b"evil"))
    result = attest(node.config, node.client)
    assert result.status == "untrusted" and result.reason == "ima_file_not_approved"


def test_a_list_hiding_an_entry_the_tpm_measured_is_untrusted(make_node: object) -> None:
    node = make_node()  # type: ignore[operator]
    enroll(node.config, node.client)
    attest(node.config, node.client)
    node.measure(made.file_entry(b"/tmp/hidden", b"evil"), write=False)
    node.measure(prog(1))
    result = attest(node.config, node.client)
    assert result.status == "untrusted" and result.reason == "ima_pcr_mismatch"


def test_after_a_reboot_the_agent_sends_the_full_list_in_the_same_round(make_node: object) -> None:
    node = make_node()  # type: ignore[operator]
    node.measure(prog(0), prog(1))
    enroll(node.config, node.client)
    attest(node.config, node.client)
    swtpm.stop(node.tpm)
    node.boot()
    node.measure(prog(2))
    result = attest(node.config, node.client)
    assert result.status == "trusted", result.reason
    sent = node.client.sent()
    assert sent[1][0] == 3  # the stale cursor: refused with ima_full_log_required
    assert sent[2] == (0, len(node.ima_path.read_bytes()))  # then the full list, same round
