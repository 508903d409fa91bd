"""The boot simulator turns real event logs into swtpm nodes whose quotes and logs agree.

Each node is a clone of one manufactured swtpm, started without TPM2_Startup; the simulator
starts it at the log's locality and extends the log. The agent then quotes, the quote is verified
with assay.tpm2.verify_quote, and the quoted PCRs must equal assay.eventlog.replay of the log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.tpm import AkBlobs, Tpm
from assay.algorithms import HashAlg
from assay.errors import ConfigurationError, VerificationFailed
from assay.eventlog import VerifiedBootLog, parse_event_log, replay, verify_log
from assay.tpm2 import VerifiedQuote, parse_public, verify_quote
from testkit import swtpm
from testkit.bootsim import main as bootsim_main
from testkit.bootsim import simulate_boot

pytestmark = pytest.mark.swtpm

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "eventlogs"

# Five real logs with SHA-256 banks; keylime's starts PCR0 at locality 3 (StartupLocality).
LOGS = [
    "keylime/binary_bios_measurements",
    "python3-uefi-eventlog/rhcos.bin",
    "go-tpm-tools/cos-101-amd-sev.bin",
    "rust-keylime/uefi_log.bin",
    "qemu-ovmf-debian12/secureboot-shim-grub-kernel.bin",
]
SHA256_ALL = {HashAlg.SHA256: tuple(range(24))}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> swtpm.SwtpmNode:
    base = tmp_path_factory.mktemp("bootsim-factory")
    return swtpm.provision(base / "tpm", base / "ca")


@pytest.fixture()
def fresh(template: swtpm.SwtpmNode, tmp_path: Path) -> Iterator[swtpm.SwtpmNode]:
    """A swtpm waiting for TPM2_Startup, as after a platform reset."""
    with swtpm.running(swtpm.clone(template, tmp_path / "node"), startup=False) as node:
        yield node


def _quote(node: swtpm.SwtpmNode, selection: dict[HashAlg, tuple[int, ...]]) -> VerifiedQuote:
    nonce = os.urandom(32)
    with Tpm(node.tcti) as tpm:
        ak: AkBlobs = tpm.create_ak("rsa", "ecc")
        q = tpm.quote(ak, nonce, selection)
    return verify_quote(q.attest, q.signature, parse_public(ak.public), nonce, q.pcrs)


@pytest.mark.parametrize("name", LOGS)
def test_simulated_boot_quotes_the_pcrs_that_the_log_replays_to(
    fresh: swtpm.SwtpmNode, name: str
) -> None:
    data = (CORPUS / name).read_bytes()
    result = simulate_boot(fresh.tcti, data, eventlog_out=fresh.eventlog)
    log = parse_event_log(fresh.eventlog.read_bytes())
    expected = replay(log)
    assert HashAlg.SHA256 in result.banks and result.skipped == ()
    assert result.start_locality == expected.start_locality
    quoted = _quote(fresh, SHA256_ALL)
    want = expected.pcrs[HashAlg.SHA256]
    assert want, "the log measures something"
    assert {p: quoted.pcrs[HashAlg.SHA256][p] for p in want} == want
    untouched = set(range(24)) - set(want) - set(range(17, 23))
    assert all(quoted.pcrs[HashAlg.SHA256][p] == bytes(32) for p in untouched)
    verified = verify_log(log, quoted, HashAlg.SHA256)
    assert verified.bank is HashAlg.SHA256 and isinstance(verified, VerifiedBootLog)
    assert dict(verified.pcrs) == dict(quoted.pcrs[HashAlg.SHA256])
    assert verified.pcrs_outside_log == frozenset() and verified.unquoted_pcrs == frozenset()
    assert len(verified.events) == sum(1 for e in log.events if e.is_measured and e.pcr < 24)


def test_startup_locality_log_starts_pcr0_at_three(fresh: swtpm.SwtpmNode) -> None:
    data = (CORPUS / "keylime/binary_bios_measurements").read_bytes()
    assert simulate_boot(fresh.tcti, data).start_locality == 3
    log = parse_event_log(data)
    pcr0 = bytes(31) + b"\x03"  # the value before the first PCR0 measurement
    for event in log.events_in(0):
        if event.is_measured:
            pcr0 = HashAlg.SHA256.hash(pcr0 + event.digests[HashAlg.SHA256])
    assert _quote(fresh, {HashAlg.SHA256: (0,)}).pcrs[HashAlg.SHA256][0] == pcr0


def test_simulated_qemu_boot_equals_the_pcrs_read_inside_the_real_guest(
    fresh: swtpm.SwtpmNode,
) -> None:
    """An oracle independent of our replay: PCRs the real VM read after this very boot."""
    name = "qemu-ovmf-debian12/secureboot-shim-grub-kernel"
    simulate_boot(fresh.tcti, (CORPUS / f"{name}.bin").read_bytes())
    guest = json.loads((CORPUS / f"{name}.expected_pcrs.json").read_text())["pcrs"]
    selection = {HashAlg.SHA256: tuple(range(10)), HashAlg.SHA384: tuple(range(10))}
    quoted = _quote(fresh, selection)
    for alg in selection:
        got = {p: quoted.pcrs[alg][p].hex() for p in range(10)}
        assert got == {p: guest[alg.bank][str(p)].lower() for p in range(10)}


def test_extra_extend_makes_the_quote_disagree_with_the_log(fresh: swtpm.SwtpmNode) -> None:
    data = (CORPUS / "python3-uefi-eventlog/rhcos.bin").read_bytes()
    simulate_boot(fresh.tcti, data, extra_extends=[(4, b"rootkit")])
    with pytest.raises(VerificationFailed) as err:
        verify_log(parse_event_log(data), _quote(fresh, SHA256_ALL), HashAlg.SHA256)
    assert err.value.code == "pcr_replay_mismatch"
    assert "4" in str(err.value)


def test_replaced_event_in_the_log_only_is_a_replay_mismatch(fresh: swtpm.SwtpmNode) -> None:
    data = (CORPUS / "python3-uefi-eventlog/rhcos.bin").read_bytes()
    target = next(e for e in parse_event_log(data).events if e.is_measured and e.pcr == 4)
    simulate_boot(
        fresh.tcti, data, eventlog_out=fresh.eventlog,
        replacements={target.index: b"other kernel"}, log_only=True,
    )  # fmt: skip
    lying = parse_event_log(fresh.eventlog.read_bytes())
    assert lying.events[target.index].data == b"other kernel"
    assert lying.events[target.index].digests[HashAlg.SHA256] == HashAlg.SHA256.hash(
        b"other kernel"
    )
    with pytest.raises(VerificationFailed) as err:
        verify_log(lying, _quote(fresh, SHA256_ALL), HashAlg.SHA256)
    assert err.value.code == "pcr_replay_mismatch"


def test_replaced_event_in_tpm_and_log_agrees_but_differs_from_the_original(
    fresh: swtpm.SwtpmNode,
) -> None:
    data = (CORPUS / "python3-uefi-eventlog/rhcos.bin").read_bytes()
    original = parse_event_log(data)
    target = next(e for e in original.events if e.is_measured and e.pcr == 4)
    simulate_boot(
        fresh.tcti, data, eventlog_out=fresh.eventlog, replacements={target.index: b"kernel 2"}
    )
    honest = parse_event_log(fresh.eventlog.read_bytes())
    assert len(honest.events) == len(original.events)
    assert [e.data for e in honest.events if e.index != target.index] == [
        e.data for e in original.events if e.index != target.index
    ]
    quoted = _quote(fresh, SHA256_ALL)
    verify_log(honest, quoted, HashAlg.SHA256)  # log and TPM agree
    assert quoted.pcrs[HashAlg.SHA256][4] != replay(original).pcrs[HashAlg.SHA256][4]


def test_simulator_refuses_a_tpm_that_was_already_started(
    template: swtpm.SwtpmNode, tmp_path: Path
) -> None:
    data = (CORPUS / "python3-uefi-eventlog/rhcos.bin").read_bytes()
    with swtpm.running(swtpm.clone(template, tmp_path / "n"), startup=True) as node:
        with pytest.raises(ConfigurationError, match="PCR 0 is not in its reset state"):
            simulate_boot(node.tcti, (CORPUS / "keylime/binary_bios_measurements").read_bytes())
        simulate_boot(node.tcti, data)  # locality 0: the reset state is right, once
        with pytest.raises(ConfigurationError, match="not in its reset state"):
            simulate_boot(node.tcti, data)


def test_boot_sim_cli_writes_the_log_and_reports_the_banks(
    fresh: swtpm.SwtpmNode, capsys: pytest.CaptureFixture[str]
) -> None:
    log = CORPUS / "go-tpm-tools/cos-101-amd-sev.bin"
    argv = [str(log), "--tcti", fresh.tcti, "--out", str(fresh.eventlog)]
    assert bootsim_main(argv) == 0
    assert fresh.eventlog.read_bytes() == log.read_bytes()
    assert "into sha1,sha256,sha384" in capsys.readouterr().out


def test_boot_sim_rejects_bad_tamper_options() -> None:
    from testkit.bootsim import parse_extra_extend, parse_replacement

    with pytest.raises(ConfigurationError, match="PCR 17"):
        parse_extra_extend("17:00")
    with pytest.raises(ConfigurationError):
        parse_replacement("x:zz")
    assert parse_extra_extend("7:6869") == (7, b"hi")
