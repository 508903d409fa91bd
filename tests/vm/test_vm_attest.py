"""Real boots through the whole product: enrollment, attestation, golden sets, revocation.

Golden sets come from the same .deb files the nodes boot (``golden from-deb``: shim + GRUB, and
one set per kernel), plus one reviewed capture of the platform (firmware, Secure Boot keys and
databases, shim's MokList/SbatLevel, the fleet's kernel command line and initrd) taken with
``golden capture --without boot-apps`` from the log of another node on the same QEMU/OVMF platform
(the sb-cloud node: no boot application of it goes into the set). The UKI fleet's set is a full
capture of the UKI node's boot, Secure Boot not required.

Which tampered boot is which: a kernel command line changed in grub.cfg (sb-cmdline); a kernel
flavour no set approves (sb-cloud, linux-image-cloud-amd64); Secure Boot off (the UKI node
appraised against the Secure Boot fleet's sets); an unknown EFI application started before the
OS loader (uki-sdboot: systemd-boot as BOOTX64.EFI, then the same UKI, Secure Boot off) and, with
Secure Boot on, before shim (sb-shell: OVMF's built-in UEFI Shell started first through BootNext).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.errors import VerifierRefused
from assay.eventlog import parse_event_log
from testkit import swtpm as agent_swtpm

from .attest import Verifier, VmAgent, failing_reasons, failures, golden_cli, running_verifier
from .fleet import REBOOTED, Fleet

pytestmark = pytest.mark.vm

SB = {"fleet": "sb"}
UKI = {"fleet": "uki"}
REVOCATION = "CVE-2026-0001 in kernel A: test revocation"
# the UEFI Shell's file GUID 7C04A583-9E3E-4F1C-AD65-E05268D0B4D1 as in a device path
SHELL_FILE_GUID = bytes.fromhex("83a5047c3e9e1c4fad65e05268d0b4d1")


@dataclass(frozen=True)
class Golden:
    platform: Path
    boot: Path
    kernel_a: Path
    kernel_b: Path
    uki: Path
    vendor_ca: Path


@pytest.fixture(scope="module")
def golden(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Golden]:
    out = tmp_path_factory.mktemp("vm-golden")
    sb, cloud = fleet.nodes["sb"].image, fleet.nodes["sb-cloud"].image
    shim_deb, grub_deb = sb.boot.debs[0], sb.boot.debs[1]
    assert shim_deb.name.startswith("shim-signed_") and grub_deb.name.startswith("grub-efi-")
    g = Golden(
        out / "platform.yaml",
        out / "boot.yaml",
        out / "kernel-a.yaml",
        out / "kernel-b.yaml",
        out / "uki.yaml",
        out / "vendor-ca",
    )
    # from the packages alone (nothing here depends on a boot)
    golden_cli("from-deb", shim_deb, grub_deb, "-o", g.boot, "--name", "debian-boot")
    golden_cli("from-deb", sb.kernel.deb, "-o", g.kernel_a, "--name", "kernel-a")
    golden_cli("from-deb", cloud.kernel.deb, "-o", g.kernel_b, "--name", "kernel-b")
    # the reviewed platform capture, and the UKI fleet's capture
    ref, uki = fleet.nodes["sb-cloud"].eventlog_path, fleet.nodes["uki"].eventlog_path
    golden_cli("capture", "--from-log", ref, "--without", "boot-apps", "-o", g.platform,
               "--name", "qemu-ovmf-platform")  # fmt: skip
    golden_cli("capture", "--from-log", uki, "-o", g.uki, "--name", "uki-fleet")
    agent_swtpm.export_ca(fleet.ca_dir, g.vendor_ca)
    yield g
    shutil.rmtree(out, ignore_errors=True)


def _sb_fleet(v: Verifier, g: Golden, *, kernel_b: bool = False) -> None:
    for path in (g.platform, g.boot, g.kernel_a, *((g.kernel_b,) if kernel_b else ())):
        v.add_golden(path, SB)


@pytest.fixture(scope="module")
def verifier(golden: Golden, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Verifier]:
    """Kernel A approved for the Secure Boot fleet; the UKI fleet has its own set."""
    with running_verifier(tmp_path_factory.mktemp("vm-verifier"), golden.vendor_ca) as v:
        _sb_fleet(v, golden)
        v.add_golden(golden.uki, UKI)
        yield v


def _agent(fleet: Fleet, v: Verifier, variant: str, labels: dict[str, str], tmp: Path) -> VmAgent:
    return VmAgent(fleet.nodes[variant], v, f"node-{variant}", labels, tmp / f"agent-{variant}")


def test_secure_boot_vm_enrolls_with_validated_ek_cert_attests_and_is_trusted(
    fleet: Fleet, verifier: Verifier, tmp_path: Path
) -> None:
    agent = _agent(fleet, verifier, "sb", SB, tmp_path)
    enrollment = agent.enroll()
    assert enrollment.node == "node-sb"
    assert verifier.node("node-sb")["state"] == "enrolled"
    first = agent.attest()
    assert (first.status, first.node_state) == ("trusted", "trusted"), first.reason
    assert failures(first) == []
    assert first.reason.startswith("all ")
    again = agent.attest()  # same boot: the verifier already holds the log, the agent omits it
    assert again.status == "trusted"
    shown = verifier.node("node-sb")
    assert shown["state"] == "trusted"
    assert {"debian-boot@1", "kernel-a@1", "qemu-ovmf-platform@1"} <= set(shown["golden"])


def test_ek_certificate_from_another_ca_is_refused(
    fleet: Fleet, golden: Golden, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca"
    other.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some other TPM vendor CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2034, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (other / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    with running_verifier(tmp_path / "v", other) as v:
        agent = _agent(fleet, v, "sb", SB, tmp_path)
        with pytest.raises(VerifierRefused) as err:
            agent.enroll()
    assert err.value.code == "ek_cert_untrusted"


def test_kernel_command_line_changed_in_grub_cfg_is_untrusted(
    fleet: Fleet, verifier: Verifier, tmp_path: Path
) -> None:
    agent = _agent(fleet, verifier, "sb-cmdline", SB, tmp_path)
    agent.enroll()
    result = agent.attest()
    assert result.status == "untrusted"
    assert result.reason.startswith("cmdline_not_approved")
    # The edited grub.cfg (PCR9) and the GRUB commands it changed (PCR8) are not accounted for
    # either: the closed world names every digest that differs from the approved boot.
    assert failing_reasons(result) == {"cmdline_not_approved", "event_not_accounted"}
    (check,) = [c for c in failures(result) if c["reason"] == "cmdline_not_approved"]
    unaccounted = [c for c in failures(result) if c["reason"] == "event_not_accounted"]
    assert {c["pcr"] for c in unaccounted} == {8, 9}
    assert check["pcr"] == 8
    assert "nokaslr" in str(check["got"]) + str(check["message"])
    assert verifier.node("node-sb-cmdline")["state"] == "untrusted"


def test_kernel_that_no_golden_set_approves_is_untrusted(
    fleet: Fleet, verifier: Verifier, tmp_path: Path
) -> None:
    agent = _agent(fleet, verifier, "sb-cloud", SB, tmp_path)
    agent.enroll()
    result = agent.attest()
    assert result.status == "untrusted"
    assert result.reason.startswith("boot_app_not_approved")
    # only the kernel (loaded by GRUB through shim, measured twice): shim and GRUB are approved,
    # and so the pinned boot order shim → loader → kernel lacks its kernel stage
    assert failing_reasons(result) == {"boot_app_not_approved", "boot_stage_missing"}
    assert all(c["pcr"] == 4 for c in failures(result))
    assert len([c for c in failures(result) if c["reason"] == "boot_app_not_approved"]) == 2


def test_unknown_efi_application_before_the_os_loader_is_untrusted(
    fleet: Fleet, verifier: Verifier, tmp_path: Path
) -> None:
    clean = _agent(fleet, verifier, "uki", UKI, tmp_path)
    clean.enroll()
    assert clean.attest().status == "trusted"  # the same UKI alone passes the UKI fleet's set
    agent = _agent(fleet, verifier, "uki-sdboot", UKI, tmp_path)
    agent.enroll()
    result = agent.attest()
    assert result.status == "untrusted"
    assert failing_reasons(result) == {"boot_app_not_approved"}
    (check,) = failures(result)
    assert check["pcr"] == 4
    sdboot_event = min(
        e.index
        for e in parse_event_log(fleet.result("uki-sdboot").event_log).events
        if e.pcr == 4 and e.type_name == "EV_EFI_BOOT_SERVICES_APPLICATION"
    )
    assert check["event"] == sdboot_event


def test_secure_boot_off_is_untrusted(fleet: Fleet, golden: Golden, tmp_path: Path) -> None:
    with running_verifier(tmp_path / "v", golden.vendor_ca) as v:
        _sb_fleet(v, golden)
        agent = _agent(fleet, v, "uki", SB, tmp_path)
        agent.enroll()
        result = agent.attest()
    assert result.status == "untrusted"
    assert "secure_boot_disabled" in failing_reasons(result)
    (sb_check,) = [c for c in failures(result) if c["reason"] == "secure_boot_disabled"]
    assert sb_check["pcr"] == 7


def test_staged_rollout_revoking_kernel_a_flags_its_node_at_once(
    fleet: Fleet, golden: Golden, tmp_path: Path
) -> None:
    with running_verifier(tmp_path / "v", golden.vendor_ca) as v:
        _sb_fleet(v, golden, kernel_b=True)
        a = _agent(fleet, v, "sb", SB, tmp_path)
        b = _agent(fleet, v, "sb-cloud", SB, tmp_path)
        for agent in (a, b):
            agent.enroll()
            assert agent.attest().status == "trusted"
        revoked = v.revoke("kernel-a", "1", REVOCATION)
        states = {r["node"]: r["state"] for r in revoked["reappraised"]}
        assert states == {"node-sb": "untrusted", "node-sb-cloud": "trusted"}
        node_a, node_b = v.node("node-sb"), v.node("node-sb-cloud")
    assert node_a["state"] == "untrusted"
    assert node_a["reason"].startswith("golden_revoked")
    assert "kernel-a@1" in node_a["reason"] and REVOCATION in node_a["reason"]
    assert node_b["state"] == "trusted"


def test_staged_rollout_of_two_kernel_versions_on_real_boots(
    fleet: Fleet, golden: Golden, tmp_path: Path
) -> None:
    """One golden set, two versions built from the .debs before either boots: ``a`` the generic
    kernel, ``b`` the cloud kernel. Node 1 boots A, node 2 B; both trusted, node 1 outdated once
    B is active; revoking A flags node 1 at once (golden_revoked, with the reason), node 2 stays
    trusted; node 1 rolls forward — the same VM and TPM rebooted into kernel B — and is trusted.
    The sets come from the packages alone (node 1 is the fleet's sb-reboot node, an sb boot with
    a VM and TPM of its own; node 2 is the fleet's sb-cloud boot, whose .debs are the same
    files)."""
    out = tmp_path / "sets"
    out.mkdir()
    sb, cloud = fleet.nodes["sb"].image, fleet.nodes["sb-cloud"].image
    a, b = out / "kernel-a.yaml", out / "kernel-b.yaml"
    golden_cli("from-deb", sb.kernel.deb, "-o", a, "--name", "debian-kernel", "--version", "a")
    golden_cli("from-deb", cloud.kernel.deb, "-o", b, "--name", "debian-kernel", "--version", "b")
    one = fleet.nodes[REBOOTED]  # booted from sb's image, by no other test: it reboots below
    try:
        assert one.image == sb
        with running_verifier(tmp_path / "v", golden.vendor_ca) as v:
            for path in (golden.platform, golden.boot, a, b):
                v.add_golden(path, SB)
            agent_1 = VmAgent(one, v, "node-1", SB, tmp_path / "agent-1")
            agent_2 = _agent(fleet, v, "sb-cloud", SB, tmp_path)
            for agent in (agent_1, agent_2):
                agent.enroll()
                result = agent.attest()
                assert result.status == "trusted", result.reason
            assert "debian-kernel@a" in v.node("node-1")["booted"]
            assert "debian-kernel@b" in v.node("node-sb-cloud")["booted"]
            assert v.outdated() == {"node-1": ["debian-kernel@a superseded"]}
            v.revoke("debian-kernel", "a", REVOCATION)
            node_1 = v.node("node-1")
            assert node_1["state"] == "untrusted"
            assert node_1["reason"].startswith("golden_revoked")
            assert "debian-kernel@a" in node_1["reason"] and REVOCATION in node_1["reason"]
            assert v.node("node-sb-cloud")["state"] == "trusted"
            assert v.outdated() == {"node-1": ["debian-kernel@a revoked"]}
            first_reset = node_1["reset_count"]
            one.reboot(cloud)  # rolled forward: the A/B partitions' other kernel
            assert agent_1.attest().status == "trusted"
            node_1 = v.node("node-1")
            assert node_1["state"] == "trusted" and node_1["reset_count"] > first_reset
            assert "debian-kernel@b" in node_1["booted"]
            assert v.outdated() == {}
    finally:
        one.close()


def test_unknown_efi_application_before_shim_with_secure_boot_on_is_untrusted(
    fleet: Fleet, verifier: Verifier, tmp_path: Path
) -> None:
    """OVMF's built-in UEFI Shell (in the firmware volume, so Secure Boot lets it load) is
    started first through BootNext; it runs and returns, then the firmware boots shim -> GRUB ->
    kernel from the disk as on the good node. The shell is in no golden set."""
    log = parse_event_log(fleet.result("sb-shell").event_log)
    apps = [
        e for e in log.events if e.pcr == 4 and e.type_name == "EV_EFI_BOOT_SERVICES_APPLICATION"
    ]
    assert len(apps) == 5  # shell, shim, GRUB, kernel twice
    shell = apps[0]
    assert SHELL_FILE_GUID in bytes(shell.data)  # FvFile(7C04A583-…): the firmware's own shell
    assert "EFI/BOOT/BOOTX64.EFI".encode("utf-16-le") not in bytes(shell.data).replace(
        b"\\\x00", b"/\x00"
    )
    sb_apps = [e.digests for e in parse_event_log(fleet.result("sb").event_log).events
               if e.pcr == 4 and e.type_name == "EV_EFI_BOOT_SERVICES_APPLICATION"]  # fmt: skip
    assert [e.digests for e in apps[1:]] == sb_apps  # the rest is the good node's chain
    agent = _agent(fleet, verifier, "sb-shell", SB, tmp_path)
    agent.enroll()
    result = agent.attest()
    assert result.status == "untrusted"
    assert result.reason.startswith("boot_app_not_approved")
    # The shell, and the boot variable that started it (BootNext in PCR1): nothing else differs.
    assert failing_reasons(result) == {"boot_app_not_approved", "event_not_accounted"}
    (check,) = [c for c in failures(result) if c["reason"] == "boot_app_not_approved"]
    assert (check["pcr"], check["event"]) == (4, shell.index)
    (variable,) = [c for c in failures(result) if c["reason"] == "event_not_accounted"]
    assert (variable["pcr"], log.events[variable["event"]].type_name) == (1, "EV_EFI_VARIABLE_BOOT")
