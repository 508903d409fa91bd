"""Real IMA measurement lists from real kernel boots, appraised against runtime policies.

The runtime nodes (``ima*`` variants, ``tests/vm/runtime_image.py``) boot Debian's kernel through
shim and GRUB with ``ima_policy=tcb ima_policy=critical_data`` and ``ima_template=ima-ng`` (the
``ima-sig`` node: ``ima_template=ima-sig``), switch_root into an ext4 disk made with ``mke2fs -d``
from Debian packages, run coreutils and busybox from it, and hand the IMA list out over the second
serial port. Each node's TPM is then quoted by the host (``tests/vm/ima_appraisal.py``).

Which boot is which: ``ima`` the good node; ``ima-unknown`` also runs a binary no package ships;
``ima-patched`` runs a ``/usr/bin/uname`` with bytes appended; ``ima-selinux0`` adds ``selinux=0``
to the kernel command line; ``ima-sig`` runs a file signed with a key the builder made.

Every runtime node boots SELinux enforcing (``security=selinux enforcing=1``) with Debian's
default policy: ``selinux-policy-default`` ships policy modules, not a policy image, so the builder
compiles them as the package's postinst does (``semodule -X 100 -n -s default``, into an alternate
root on the host) and the initramfs loads the image (one write to ``/sys/fs/selinux/load``, as
``load_policy`` does) before anything else; the kernel then logs ``selinux-state`` and
``selinux-policy-hash`` as critical data.

The runtime policy is ``golden runtime from-deb`` of the very .debs on the disk, with one
exclusion: ``kernel_version``. With ``critical_data`` the kernel logs its release string as an
``ima-buf`` entry named ``kernel_version`` (``ima_init.c``); no package file holds that buffer, and
what it states — which kernel runs — is already pinned by the boot policy, which approves the
kernel image's Authenticode digest (PCR4) from ``golden from-deb`` of the kernel package. The test
checks that the buffer is the booted package's release all the same. Nothing else needs excluding:
the second stage's script lives in a tmpfs, which the tcb policy does not measure, and so does the
SELinux policy image in the initramfs (its content is judged by its hash, below). The SELinux
expectations (enforcing, the approved policy hash) are the SELinux section of a capture
(``golden runtime capture``) of another node of the fleet (ima-unknown): the kernel hashes the
policy as it serializes it back (``security_read_state_kernel``, what ``/sys/fs/selinux/policy``
returns), which is not the bytes of the policy file loaded, so the hash cannot be computed from the
file and comes from a reviewed node.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from assay.algorithms import HashAlg
from assay.errors import VerificationFailed
from assay.ima import (
    ImaReplay,
    keyid_of,
    load_key,
    parse_ima_log,
    parse_selinux_state,
    replay_ima,
    verify_ima,
)
from assay.tpm2 import VerifiedQuote
from golden.debs import iter_data_files, read_deb_file
from golden.runtime_yaml import load_runtime_file
from testkit import swtpm as agent_swtpm

from .attest import VmAgent, failing_reasons, failures, golden_cli, running_verifier
from .builder import IMA_CMDLINE, PATCHED_BINARY, SIGNED_BINARY, UNKNOWN_BINARY
from .fleet import Fleet
from .ima_appraisal import RuntimeAppraisal, appraise_runtime_node, quote_node
from .runtime_image import PATCH_MARK, RUN_COMMANDS, tiny_elf

pytestmark = pytest.mark.vm

IMA_FLEET = {"fleet": "ima"}
RUNTIME_NODES = ("ima", "ima-unknown", "ima-patched", "ima-selinux0", "ima-sig")


@dataclass(frozen=True)
class Policies:
    debian: Path  # golden runtime from-deb of the disk's packages
    selinux: Path  # enforcing, and the policy hash of a reviewed node
    signed: Path  # the operator's key: /usr/local/bin/* must be signed by it, and that approves
    other_key: Path  # the same rules with a key that signed nothing


def _signed_policy(path: Path, name: str, pem: bytes) -> Path:
    block = "".join(f"        {line}\n" for line in pem.decode().splitlines())
    path.write_text(
        f"kind: runtime-policy\nname: {name}\nversion: '1'\n"
        "signatures:\n  keys:\n    - label: operator\n      pem: |\n"
        f"{block}"
        "  require: ['/usr/local/bin/*']\n  approve_signed: true\n"
    )
    return path


def _public_pem(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def policies(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Policies]:
    out = tmp_path_factory.mktemp("vm-runtime")
    image = fleet.nodes["ima"].image
    debian = out / "debian-runtime.yaml"
    # kernel_version: see the module docstring (the boot policy pins the kernel)
    golden_cli("runtime", "from-deb", *image.runtime_debs, "-o", debian,
               "--name", "debian-runtime", "--exclude", "kernel_version")  # fmt: skip
    captured = out / "captured.yaml"
    golden_cli("runtime", "capture", "--from-log", fleet.nodes["ima-unknown"].ima_path,
               "-o", captured)  # fmt: skip
    reviewed = load_runtime_file(str(captured)).selinux
    assert reviewed is not None and reviewed.require_enforcing
    selinux = out / "fleet-selinux.yaml"
    hashes = "".join(f"    - {h.hex()}\n" for h in reviewed.policy_hashes)
    selinux.write_text(
        "kind: runtime-policy\nname: fleet-selinux\nversion: '1'\n"
        f"selinux:\n  require_enforcing: true\n  policy_hashes:\n{hashes}"
    )
    key = fleet.nodes["ima-sig"].image.signing_key
    assert key is not None
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_pem = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    yield Policies(
        debian,
        selinux,
        _signed_policy(out / "signed.yaml", "operator-signed", _public_pem(key.read_bytes())),
        _signed_policy(out / "other-key.yaml", "other-key", other_pem),
    )
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def quotes(fleet: Fleet) -> dict[str, VerifiedQuote]:
    """One verified quote (PCR0–10, SHA-1 and SHA-256) per runtime node, by a fresh AK."""
    return {name: quote_node(fleet.nodes[name]) for name in RUNTIME_NODES}


def _appraise(
    fleet: Fleet, quotes: dict[str, VerifiedQuote], name: str, *policy: Path
) -> RuntimeAppraisal:
    return appraise_runtime_node(fleet.nodes[name], policy, quote=quotes[name])


def _deb_digests(debs: tuple[Path, ...]) -> dict[str, bytes]:
    """Installed path (merged-/usr) → SHA-256 of the file, straight from the packages."""
    out: dict[str, bytes] = {}
    for deb in debs:
        for f in iter_data_files(read_deb_file(str(deb)), str(deb)):
            path = f.path
            if path.startswith(("/bin/", "/sbin/", "/lib/", "/lib64/")):
                path = "/usr" + path
            if f.hardlink_to is None:
                out[path] = hashlib.sha256(f.content).digest()
    return out


# -- the real list ------------------------------------------------------------------------------


def test_ima_node_runs_its_programs_from_the_disk_and_the_kernel_measures_them(
    fleet: Fleet,
) -> None:
    result = fleet.result("ima")
    assert result.guest_cmdline == f"BOOT_IMAGE=/vmlinuz {IMA_CMDLINE}"
    assert result.ran == tuple(f"rc=0 {cmd}" for cmd in RUN_COMMANDS)
    assert result.ima_log is not None
    log = parse_ima_log(result.ima_log)
    assert log.format == "binary"
    assert {e.template for e in log.entries} == {"ima-ng", "ima-buf"}
    digests = _deb_digests(fleet.nodes["ima"].image.runtime_debs)
    files = {e.name.decode(): e.digest for e in log.entries[1:] if e.buf is None}
    # the shell switch_root started, each program run, the libraries they mapped, a file root read
    for path in ("/usr/bin/busybox", "/usr/bin/uname", "/usr/bin/id", "/usr/bin/ls",
                 "/usr/bin/sha256sum", "/usr/bin/expr", "/usr/share/doc/coreutils/copyright",
                 "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                 "/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libselinux.so.1"):  # fmt: skip
        assert files.get(path) == digests[path], path
    assert set(files) <= set(digests)  # nothing measured that the packages do not ship
    assert all(e.digest_alg == "sha256" for e in log.entries)  # Debian's ima_hash
    # kernel_version (critical data): the release of the kernel package that booted
    (version,) = [e for e in log.entries if e.name == b"kernel_version"]
    release = fleet.nodes["ima"].image.kernel.deb.name.split("_")[0].removeprefix("linux-image-")
    assert version.buf == release.encode()
    assert version.digest == hashlib.sha256(release.encode()).digest()


def test_quoted_pcr10_equals_the_ima_replay_in_the_sha1_and_sha256_banks(
    fleet: Fleet, quotes: dict[str, VerifiedQuote]
) -> None:
    for name in RUNTIME_NODES:
        ima_log = fleet.result(name).ima_log
        assert ima_log is not None
        log = parse_ima_log(ima_log)
        replayed = replay_ima(log)
        vq = quotes[name]
        for bank in (HashAlg.SHA1, HashAlg.SHA256):
            assert vq.pcrs[bank][10] == replayed.value(bank, 10), f"{name} {bank.bank}"
            verified = verify_ima(ImaReplay.initial(), log, vq, bank)
            assert verified.mode == "per-bank" and verified.unquoted == ()
            assert len(verified.entries) == len(log.entries)
        # kernels ≥ 5.8 hash the template data with each bank's own algorithm, not padded SHA-1
        sha256 = vq.pcrs[HashAlg.SHA256][10]
        assert sha256 != replayed.value(HashAlg.SHA256, 10, "sha1-padded")


def test_banks_whose_hash_the_kernel_lacks_hold_the_sha1_padded_form(fleet: Fleet) -> None:
    """Debian's kernel has SHA-384/512 as modules (not loaded when IMA starts): IMA says it cannot
    allocate them and extends those banks with the SHA-1 template hash, zero-padded."""
    result = fleet.result("ima")
    assert "ima: Can not allocate sha384" in result.console
    assert result.ima_log is not None
    log = parse_ima_log(result.ima_log)
    vq = quote_node(fleet.nodes["ima"], (HashAlg.SHA384, HashAlg.SHA512))
    for bank in (HashAlg.SHA384, HashAlg.SHA512):
        verified = verify_ima(ImaReplay.initial(), log, vq, bank)
        assert verified.mode == "sha1-padded"
        assert vq.pcrs[bank][10] == replay_ima(log).value(bank, 10, "sha1-padded")
        assert vq.pcrs[bank][10] != replay_ima(log).value(bank, 10, "per-bank")


def test_binary_and_ascii_lists_hold_the_same_entries(fleet: Fleet) -> None:
    for name in ("ima", "ima-sig"):
        result = fleet.result(name)
        assert result.ima_log is not None and result.ima_ascii is not None
        binary, ascii_ = parse_ima_log(result.ima_log), parse_ima_log(result.ima_ascii)
        assert (binary.format, ascii_.format) == ("binary", "ascii")
        assert [(e.template_hash, e.template, e.name, e.digest, e.sig, e.buf)
                for e in ascii_.entries] == [
            (e.template_hash, e.template, e.name, e.digest, e.sig, e.buf) for e in binary.entries
        ]  # fmt: skip


def test_boot_aggregate_is_the_sha256_of_the_quoted_pcr0_to_pcr9(
    fleet: Fleet, quotes: dict[str, VerifiedQuote], policies: Policies
) -> None:
    """Linux ≥ 5.8 hashes PCR0–9 (not only PCR0–7) when the aggregate's bank is not SHA-1; Debian's
    ima_hash is SHA-256, so the SHA-256 bank's PCR0–9 it is."""
    ima_log = fleet.result("ima").ima_log
    assert ima_log is not None
    first = parse_ima_log(ima_log).entries[0]
    assert (first.name, first.digest_alg) == (b"boot_aggregate", "sha256")
    pcrs = quotes["ima"].pcrs[HashAlg.SHA256]
    assert first.digest == hashlib.sha256(b"".join(pcrs[i] for i in range(10))).digest()
    assert first.digest != hashlib.sha256(b"".join(pcrs[i] for i in range(8))).digest()
    got = _appraise(fleet, quotes, "ima", policies.debian)
    (check,) = [c for c in got.checks if c.id == "ima.boot_aggregate"]
    assert (check.status, check.reason) == ("pass", "ima_boot_aggregate_ok")
    assert "PCR0–9 (sha256)" in check.message


def test_another_boots_list_verifies_only_as_far_as_this_quote_vouches(
    fleet: Fleet, quotes: dict[str, VerifiedQuote]
) -> None:
    """ima and ima-unknown boot the same chain (the same boot_aggregate) and run the same programs;
    ima-unknown then runs one more. Against the ima node's quote, its list verifies up to the
    entries the two share and the extra entry stays unquoted, never judged. ima-patched differs
    from the fourth entry on: no prefix of its list reproduces the quoted PCR10."""
    unknown, patched = fleet.result("ima-unknown").ima_log, fleet.result("ima-patched").ima_log
    assert unknown is not None and patched is not None
    log = parse_ima_log(unknown)
    verified = verify_ima(ImaReplay.initial(), log, quotes["ima"], HashAlg.SHA256)
    assert [e.name for e in verified.unquoted] == [UNKNOWN_BINARY.encode()]
    assert verified.entries == log.entries[:-1]
    with pytest.raises(VerificationFailed) as err:
        verify_ima(ImaReplay.initial(), parse_ima_log(patched), quotes["ima"], HashAlg.SHA256)
    assert err.value.code == "ima_pcr_mismatch"
    assert "PCR10 (sha256)" in str(err.value)


# -- appraisal ----------------------------------------------------------------------------------


def test_untampered_node_appraises_clean_against_the_policy_from_its_packages(
    fleet: Fleet, quotes: dict[str, VerifiedQuote], policies: Policies
) -> None:
    got = _appraise(fleet, quotes, "ima", policies.debian, policies.selinux)
    assert got.failures == ()
    assert [(c.id, c.reason) for c in got.checks] == [
        ("ima.boot_aggregate", "ima_boot_aggregate_ok"),
        ("ima.entries", "ima_entries_approved"),
    ]
    n = len(got.log.entries)
    assert got.checks[-1].message.startswith(
        f"{n} of {n} IMA entries approved by debian-runtime@1, fleet-selinux@1"
    )


def test_unknown_binary_executed_is_untrusted_naming_its_path(
    fleet: Fleet, quotes: dict[str, VerifiedQuote], policies: Policies
) -> None:
    assert fleet.result("ima-unknown").ran[-1] == f"rc=0 {UNKNOWN_BINARY}"
    got = _appraise(fleet, quotes, "ima-unknown", policies.debian, policies.selinux)
    bad = [c for c in got.failures if c.id != "ima.entries"]
    assert [(c.reason, c.got) for c in bad] == [
        (
            "ima_file_not_approved",
            "sha256:" + hashlib.sha256(tiny_elf(0, f"assay test binary {UNKNOWN_BINARY}".encode())).hexdigest(),
        )
    ]  # fmt: skip
    (check,) = bad
    entry = got.log.entries[check.event or 0]
    assert entry.name == UNKNOWN_BINARY.encode() and check.pcr == 10
    assert UNKNOWN_BINARY in check.message
    assert got.checks[-1].reason == "ima_entries_not_approved"


def test_packaged_binary_with_changed_content_is_a_digest_mismatch(
    fleet: Fleet, quotes: dict[str, VerifiedQuote], policies: Policies
) -> None:
    image = fleet.nodes["ima-patched"].image
    deb = next(d for d in image.runtime_debs if d.name.startswith("coreutils_"))
    (uname,) = [
        f.content for f in iter_data_files(read_deb_file(str(deb))) if f.path == "/bin/uname"
    ]
    got = _appraise(fleet, quotes, "ima-patched", policies.debian, policies.selinux)
    bad = [c for c in got.failures if c.id != "ima.entries"]
    assert [(c.reason, got.log.entries[c.event or 0].name) for c in bad] == [
        ("ima_digest_mismatch", PATCHED_BINARY.encode())
    ]
    (check,) = bad
    assert check.got == "sha256:" + hashlib.sha256(uname + PATCH_MARK).hexdigest()
    assert check.expected == "sha256:" + hashlib.sha256(uname).hexdigest()
    assert check.golden == "debian-runtime@1"
    assert fleet.result("ima-patched").ran[0] == "rc=0 /usr/bin/uname -r"  # it still ran


def test_ima_sig_node_logs_the_signature_and_appraises_with_the_policy_key(
    fleet: Fleet, quotes: dict[str, VerifiedQuote], policies: Policies
) -> None:
    image = fleet.nodes["ima-sig"].image
    assert image.signing_key is not None
    got = _appraise(fleet, quotes, "ima-sig", policies.debian, policies.selinux, policies.signed)
    assert {e.template for e in got.log.entries} == {"ima-sig", "ima-buf"}
    signed = [e for e in got.log.entries if e.sig is not None]
    assert [e.name for e in signed] == [SIGNED_BINARY.encode()]  # only it has security.ima
    key = load_key(_public_pem(image.signing_key.read_bytes()), "operator")
    assert signed[0].sig is not None
    assert (signed[0].sig.keyid, signed[0].sig.hash_algo) == (keyid_of(key.key), "sha256")
    assert got.failures == ()
    assert got.checks[-1].reason == "ima_entries_approved"


def test_signed_file_fails_without_the_policy_key(
    fleet: Fleet, quotes: dict[str, VerifiedQuote], policies: Policies
) -> None:
    unsigned = _appraise(fleet, quotes, "ima-sig", policies.debian, policies.selinux)
    assert [(c.reason, c.got) for c in unsigned.failures if c.id != "ima.entries"] == [
        ("ima_file_not_approved", f"sha256:{_digest_of(unsigned, SIGNED_BINARY)}")
    ]
    other = _appraise(
        fleet, quotes, "ima-sig", policies.debian, policies.selinux, policies.other_key
    )
    reasons = [(c.reason, SIGNED_BINARY in c.message) for c in other.failures]
    assert ("ima_signature_invalid", True) in reasons
    assert all(r in ("ima_signature_invalid", "ima_file_not_approved",
                     "ima_entries_not_approved") for r, _ in reasons)  # fmt: skip


def _digest_of(got: RuntimeAppraisal, path: str) -> str:
    (e,) = [e for e in got.log.entries if e.name == path.encode()]
    return e.digest.hex()


# -- the boot policy: SELinux switched off on the command line ---------------------------------


def test_selinux_disabled_on_the_kernel_command_line_is_untrusted(
    fleet: Fleet, quotes: dict[str, VerifiedQuote], policies: Policies, tmp_path: Path
) -> None:
    """Through the verifier service: the fleet's sets from the packages (shim + GRUB, the kernel),
    the platform captured from another node of the same platform (ima-unknown: its disk differs,
    which the firmware never sees), and a set with the kernel_lsm rule. The runtime list of the
    selinux=0 boot is clean: only the measured command line gives it away — Debian's kernel does
    not even read selinux=0 (CONFIG_SECURITY_SELINUX_BOOTPARAM is not set), so that node ran SELinux
    enforcing; the rule cannot know the kernel's configuration and fails the line all the same."""
    sb = fleet.nodes["ima"].image
    sets = tmp_path / "sets"
    sets.mkdir()
    boot, kernel, platform = sets / "boot.yaml", sets / "kernel.yaml", sets / "platform.yaml"
    golden_cli("from-deb", sb.boot.debs[0], sb.boot.debs[1], "-o", boot, "--name", "debian-boot")
    golden_cli("from-deb", sb.kernel.deb, "-o", kernel, "--name", "kernel-a")
    golden_cli("capture", "--from-log", fleet.nodes["ima-unknown"].eventlog_path,
               "--without", "boot-apps", "-o", platform, "--name", "ima-platform")  # fmt: skip
    lsm = sets / "lsm.yaml"
    lsm.write_text("name: fleet-lsm\nversion: '1'\nkernel_lsm: {require_selinux: true}\n")
    agent_swtpm.export_ca(fleet.ca_dir, sets / "ca")
    with running_verifier(tmp_path / "v", sets / "ca") as v:
        for path in (platform, boot, kernel, lsm):
            v.add_golden(path, IMA_FLEET)
        results = {}
        for name in ("ima", "ima-selinux0"):
            agent = VmAgent(fleet.nodes[name], v, f"node-{name}", IMA_FLEET, tmp_path / name)
            agent.enroll()
            results[name] = agent.attest()
    clean, off = results["ima"], results["ima-selinux0"]
    assert (clean.status, failures(clean)) == ("trusted", []), clean.reason
    assert [c["reason"] for c in clean.checks if c["id"] == "boot.cmdline.lsm"] == [
        "cmdline_lsm_ok"
    ]
    assert off.status == "untrusted"
    assert "cmdline_selinux_disabled" in failing_reasons(off)
    (check,) = [c for c in failures(off) if c["reason"] == "cmdline_selinux_disabled"]
    assert check["pcr"] == 8 and "selinux=0" in check["message"]
    assert fleet.result("ima-selinux0").guest_cmdline.endswith(" selinux=0")
    runtime = _appraise(fleet, quotes, "ima-selinux0", policies.debian, policies.selinux)
    assert runtime.failures == ()
    assert fleet.result("ima-selinux0").facts["selinux-enforce"] == "1"
    (config,) = sb.kernel.vmlinuz.parent.glob("config-*")
    assert "# CONFIG_SECURITY_SELINUX_BOOTPARAM is not set" in config.read_text().splitlines()


def test_runtime_verdicts_through_the_agent_and_the_verifier_service(
    fleet: Fleet, policies: Policies, tmp_path: Path
) -> None:
    """The service path: the host-side agent sends each node's IMA list with its quote; the
    verifier holds the fleet's boot sets and the runtime policies. The good node is trusted, the
    unknown binary and the patched one are untrusted naming their paths."""
    sb = fleet.nodes["ima"].image
    sets = tmp_path / "sets"
    sets.mkdir()
    boot, kernel, platform = sets / "boot.yaml", sets / "kernel.yaml", sets / "platform.yaml"
    golden_cli("from-deb", sb.boot.debs[0], sb.boot.debs[1], "-o", boot, "--name", "debian-boot")
    golden_cli("from-deb", sb.kernel.deb, "-o", kernel, "--name", "kernel-a")
    golden_cli("capture", "--from-log", fleet.nodes["ima-unknown"].eventlog_path, "--without",
               "boot-apps", "-o", platform, "--name", "ima-platform")  # fmt: skip
    agent_swtpm.export_ca(fleet.ca_dir, sets / "ca")
    results = {}
    with running_verifier(tmp_path / "v", sets / "ca") as v:
        for path in (platform, boot, kernel):
            v.add_golden(path, IMA_FLEET)
        for path in (policies.debian, policies.selinux):
            v.add_runtime(path, IMA_FLEET)
        for name in ("ima", "ima-unknown", "ima-patched"):
            agent = VmAgent(fleet.nodes[name], v, f"node-{name}", IMA_FLEET, tmp_path / name)
            agent.enroll()
            results[name] = agent.attest()
    assert results["ima"].status == "trusted", results["ima"].reason
    unknown = [
        c for c in failures(results["ima-unknown"]) if c["reason"] == "ima_file_not_approved"
    ]
    assert results["ima-unknown"].status == "untrusted"
    assert [UNKNOWN_BINARY in c["message"] for c in unknown] == [True]
    patched = [c for c in failures(results["ima-patched"]) if c["reason"] == "ima_digest_mismatch"]
    assert results["ima-patched"].status == "untrusted"
    assert [PATCHED_BINARY in c["message"] for c in patched] == [True]
    for name in ("ima-unknown", "ima-patched"):  # the boot itself is the good node's
        assert {c["reason"] for c in failures(results[name])} <= {
            "ima_file_not_approved",
            "ima_digest_mismatch",
            "ima_entries_not_approved",
        }, failures(results[name])


# -- SELinux critical data ----------------------------------------------------------------------


def test_selinux_critical_data_of_a_real_boot_says_enforcing_and_hashes_the_kernels_policy(
    fleet: Fleet,
) -> None:
    result = fleet.result("ima")
    assert result.ima_log is not None
    log = parse_ima_log(result.ima_log)
    (state_entry,) = [e for e in log.entries if e.name == b"selinux-state"]
    (hash_entry,) = [e for e in log.entries if e.name == b"selinux-policy-hash"]
    assert state_entry.template == hash_entry.template == "ima-buf"
    assert state_entry.buf is not None and hash_entry.buf is not None
    # logged once, at the policy load in the initramfs: before the disk's first program ran
    first_file = next(e.index for e in log.entries if e.buf is None and e.index > 0)
    assert state_entry.index < first_file and hash_entry.index < first_file
    state = parse_selinux_state(state_entry.buf)
    assert (state.initialized, state.enforcing, state.checkreqprot) == (True, True, False)
    assert state.capabilities["network_peer_controls"] and state.capabilities["open_perms"]
    assert result.facts["selinux-enforce"] == "1"  # what the guest read from selinuxfs
    # the policy hash is SHA-256 (ima_hash) of the policy as the kernel serializes it back —
    # what the guest read from /sys/fs/selinux/policy — not of the policy file it loaded
    assert hash_entry.buf == bytes.fromhex(result.facts["selinux-policy-sha256"])
    assert hash_entry.digest == hashlib.sha256(hash_entry.buf).digest()
    image = fleet.nodes["ima"].image.selinux_policy
    assert image is not None
    assert hash_entry.buf != hashlib.sha256(image.read_bytes()).digest()


def test_a_policy_pinning_another_selinux_policy_hash_is_untrusted(
    fleet: Fleet, quotes: dict[str, VerifiedQuote], policies: Policies, tmp_path: Path
) -> None:
    """An operator who pins the hash of the policy file (not what the kernel logs) gets every node
    refused, naming the hash the kernel logged."""
    image = fleet.nodes["ima"].image.selinux_policy
    assert image is not None
    file_hash = hashlib.sha256(image.read_bytes()).hexdigest()
    pinned = tmp_path / "file-hash.yaml"
    pinned.write_text(
        "kind: runtime-policy\nname: file-hash\nversion: '1'\n"
        f"selinux:\n  require_enforcing: true\n  policy_hashes: [{file_hash}]\n"
    )
    got = _appraise(fleet, quotes, "ima", policies.debian, pinned)
    result = fleet.result("ima")
    bad = [c for c in got.failures if c.id != "ima.entries"]
    assert [(c.reason, c.got, c.expected) for c in bad] == [
        ("selinux_policy_not_approved", result.facts["selinux-policy-sha256"], file_hash)
    ]
