"""Real measured boots: the guest's log, the TPM the firmware measured into, and a quote from it.

Each variant boots once per session (``fleet``). The host takes the TPM over after the guest
powered off (CMD_SET_DATAFD, as QEMU does) and reads it with the agent's TPM code.
"""

from __future__ import annotations

import os

import pytest

from agent.tpm import AkBlobs
from assay.algorithms import HashAlg
from assay.bootfacts import extract
from assay.errors import VerificationFailed
from assay.eventlog import assume_quoted_for_review, parse_event_log, replay, verify_log
from assay.events import EventType
from assay.tpm2 import parse_public, verify_quote
from golden.authenticode import authenticode_file

from .builder import DEFAULT_CMDLINE, VARIANTS
from .fleet import Fleet

pytestmark = pytest.mark.vm

ALL_BANKS = (HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512)
IMA_PCR = 10  # the kernel's IMA extends boot_aggregate here, outside the firmware log


def _boot_apps(fleet: Fleet, name: str, bank: HashAlg = HashAlg.SHA256) -> list[bytes]:
    log = parse_event_log(fleet.result(name).event_log)
    return [
        e.digests[bank]
        for e in log.events
        if e.pcr == 4 and e.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION
    ]


def _secure_boot(fleet: Fleet, name: str) -> bytes | None:
    log = parse_event_log(fleet.result(name).event_log)
    var = extract(assume_quoted_for_review(log, HashAlg.SHA256)).variable("SecureBoot")
    return None if var is None else var.value


def test_secure_boot_vm_runs_debians_signed_chain_with_secure_boot_on(fleet: Fleet) -> None:
    node = fleet.nodes["sb"]
    result = fleet.result("sb")
    assert result.guest_cmdline == f"BOOT_IMAGE=/vmlinuz {DEFAULT_CMDLINE}"
    assert _secure_boot(fleet, "sb") == b"\x01"
    boot = node.image.boot
    shim = authenticode_file(str(boot.shim))[HashAlg.SHA256]
    grub = authenticode_file(str(boot.grub))[HashAlg.SHA256]
    kernel = authenticode_file(str(node.image.kernel.vmlinuz))[HashAlg.SHA256]
    # firmware loads shim, shim loads GRUB, GRUB loads the kernel through shim (measured twice)
    assert _boot_apps(fleet, "sb") == [shim, grub, kernel, kernel]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_guest_log_replays_to_the_pcrs_read_over_the_host_tcti_in_every_bank(
    fleet: Fleet, name: str
) -> None:
    log = parse_event_log(fleet.result(name).event_log)
    replayed = replay(log)
    with fleet.nodes[name].tpm() as tpm:
        banks, _ = tpm.active_banks()
        assert set(banks) == set(ALL_BANKS)
        _, pcrs = tpm.pcr_read({alg: tuple(range(24)) for alg in ALL_BANKS})
    for alg in ALL_BANKS:
        assert set(replayed.pcrs[alg]) >= {0, 1, 2, 3, 4, 5, 6, 7, 9}
        for pcr in range(24):
            expected = replayed.pcrs[alg].get(pcr)
            if expected is not None:
                assert pcrs[alg][pcr] == expected, f"{alg.bank} PCR{pcr}"
            elif pcr != IMA_PCR and pcr < 17:
                assert pcrs[alg][pcr] == bytes(alg.digest_size), f"{alg.bank} PCR{pcr}"
        assert pcrs[alg][IMA_PCR] != bytes(alg.digest_size)  # extended by the kernel, not the log


def test_agent_quote_through_the_host_tcti_verifies_against_the_ak(fleet: Fleet) -> None:
    name = "sb"
    log = parse_event_log(fleet.result(name).event_log)
    selection = {HashAlg.SHA256: (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14)}
    nonce = os.urandom(32)
    with fleet.nodes[name].tpm() as tpm:
        ak: AkBlobs = tpm.create_ak(tpm.resolve_ek_kind("auto"), "ecc")
        quote = tpm.quote(ak, nonce, selection)
    vq = verify_quote(quote.attest, quote.signature, parse_public(ak.public), nonce, quote.pcrs)
    replayed = replay(log).pcrs[HashAlg.SHA256]
    assert set(vq.pcrs[HashAlg.SHA256]) == set(selection[HashAlg.SHA256])
    for pcr, value in replayed.items():
        if pcr in selection[HashAlg.SHA256]:
            assert vq.pcrs[HashAlg.SHA256][pcr] == value, f"PCR{pcr}"
    vlog = verify_log(log, vq, HashAlg.SHA256)
    assert vlog.pcrs[4] == replayed[4]
    assert log.size == len(fleet.result(name).event_log)
    with pytest.raises(VerificationFailed) as err:
        verify_quote(quote.attest, quote.signature, parse_public(ak.public), bytes(32), quote.pcrs)
    assert err.value.code == "nonce_mismatch"


def test_a_log_from_another_boot_does_not_verify_against_this_tpms_quote(fleet: Fleet) -> None:
    nonce = os.urandom(32)
    with fleet.nodes["sb"].tpm() as tpm:
        ak = tpm.create_ak(tpm.resolve_ek_kind("auto"), "ecc")
        quote = tpm.quote(ak, nonce, {HashAlg.SHA256: (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)})
    vq = verify_quote(quote.attest, quote.signature, parse_public(ak.public), nonce, quote.pcrs)
    other = parse_event_log(fleet.result("sb-cmdline").event_log)
    with pytest.raises(VerificationFailed) as err:
        verify_log(other, vq, HashAlg.SHA256)
    assert err.value.code == "pcr_replay_mismatch"
    assert "PCR8" in str(err.value) or "PCR 8" in str(err.value)


def test_tampered_grub_cfg_reaches_the_guest_and_pcr8(fleet: Fleet) -> None:
    assert fleet.result("sb-cmdline").guest_cmdline.endswith("loglevel=4 nokaslr")
    pcr8 = {
        name: replay(parse_event_log(fleet.result(name).event_log)).pcrs[HashAlg.SHA256][8]
        for name in ("sb", "sb-cmdline", "sb-cloud")
    }
    assert pcr8["sb"] == pcr8["sb-cloud"] != pcr8["sb-cmdline"]


def test_cloud_kernel_node_measures_a_different_kernel_with_the_same_shim_and_grub(
    fleet: Fleet,
) -> None:
    sb, cloud = _boot_apps(fleet, "sb"), _boot_apps(fleet, "sb-cloud")
    assert sb[:2] == cloud[:2]
    cloud_kernel = fleet.nodes["sb-cloud"].image.kernel
    assert "cloud" in cloud_kernel.deb.name
    assert cloud[2] == authenticode_file(str(cloud_kernel.vmlinuz))[HashAlg.SHA256] != sb[2]


def test_uki_nodes_boot_with_secure_boot_off_and_measure_the_built_uki(fleet: Fleet) -> None:
    uki = fleet.nodes["uki"].image.uki
    assert uki is not None
    digest = authenticode_file(str(uki))[HashAlg.SHA256]
    assert _secure_boot(fleet, "uki") == b"\x00"
    assert _boot_apps(fleet, "uki")[0] == digest
    sdboot = fleet.nodes["uki-sdboot"].image.boot.systemd_boot
    # the extra EFI application runs first, then the very same UKI
    assert _boot_apps(fleet, "uki-sdboot")[:2] == [
        authenticode_file(str(sdboot))[HashAlg.SHA256],
        digest,
    ]
    assert fleet.result("uki").guest_cmdline == DEFAULT_CMDLINE
