"""Boot policy: the measured kernel command line must keep SELinux on, enforcing, and alone among
the approved LSMs."""

from __future__ import annotations

import pytest

from verifier.appraisal.lsm import check_lsm_cmdline, kernel_params
from verifier.appraisal.verdict import FAIL, PASS

DEBIAN = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-13-amd64 root=UUID=0a1b ro quiet"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("selinux=0", "cmdline_selinux_disabled"),
        ("selinux=00", "cmdline_selinux_disabled"),  # kstrtoul: octal zero
        ("selinux=0x0", "cmdline_selinux_disabled"),
        ("enforcing=0", "cmdline_selinux_permissive"),
        ("security=apparmor", "cmdline_lsm_not_approved"),
        ("lsm=capability,apparmor", "cmdline_lsm_not_approved"),
        ("lsm=capability,yama", "cmdline_selinux_disabled"),
        ('"selinux=0"', "cmdline_selinux_disabled"),
        ("selinux=off", "cmdline_lsm_option_unclear"),
        ("selinux=1 selinux=0", "cmdline_selinux_disabled"),  # the later one is the effective one
    ],
)
def test_command_lines_that_weaken_selinux_fail(extra: str, reason: str) -> None:
    checks = check_lsm_cmdline(f"{DEBIAN} {extra}", event=12, pcr=8)
    assert reason in [c.reason for c in checks if c.status is FAIL]
    assert all(c.event == 12 and c.pcr == 8 for c in checks)


@pytest.mark.parametrize(
    "cmdline",
    [
        DEBIAN,
        f"{DEBIAN} selinux=1 enforcing=1 security=selinux",
        f"{DEBIAN} lsm=lockdown,capability,selinux,bpf",
        f"{DEBIAN} enforcing=010",  # octal 8: on
        f"{DEBIAN} -- selinux=0",  # after "--": init's argument, not the kernel's
        f'{DEBIAN} dyndbg="file selinux=0 +p"',  # inside a quoted value of another parameter
    ],
)
def test_command_lines_that_keep_selinux_pass(cmdline: str) -> None:
    checks = check_lsm_cmdline(cmdline)
    assert [(c.status, c.reason) for c in checks] == [(PASS, "cmdline_lsm_ok")]


def test_approved_lsm_list_is_configurable() -> None:
    cmdline = f"{DEBIAN} security=apparmor"
    assert (
        check_lsm_cmdline(cmdline, approved_lsms=("apparmor",), require_selinux=False)[0].status
        is PASS
    )


def test_kernel_params_follow_the_kernels_quoting() -> None:
    assert kernel_params('a=1 b="x y" "c=2" d -- e=3') == [
        ("a", "1"),
        ("b", "x y"),
        ("c", "2"),
        ("d", None),
    ]
