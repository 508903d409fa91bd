"""Boot policy: a measured kernel command line must not switch SELinux off. Pure.

``check_lsm_cmdline(cmdline)`` reads the parameters the kernel itself parses
(``security/selinux/hooks.c``: ``selinux=`` and ``enforcing=`` through ``kstrtoul``, any non-zero
value meaning on; ``security/security.c``: ``security=`` picks the one major LSM, ``lsm=`` the
ordered list of LSMs to initialise). Every occurrence counts (the kernel applies them in order, so
one disabling occurrence may be the effective one). Words after a bare ``--`` go to init, not the
kernel, and are not read. Only a command line whose digest a verified boot log vouches for means
anything; the caller (the boot appraisal) passes that text.
"""

from __future__ import annotations

from collections.abc import Iterable

from golden.model import DEFAULT_LSMS

from .verdict import FAIL, PASS, Check

__all__ = ["DEFAULT_LSMS", "check_lsm_cmdline", "kernel_params"]


def kernel_params(cmdline: str) -> list[tuple[str, str | None]]:
    """``name=value`` pairs (value None for a bare word) the way the kernel's ``next_arg`` splits
    them: whitespace separated, double quotes group (and are dropped), stop at ``--``."""
    out: list[tuple[str, str | None]] = []
    word: list[str] = []
    quoted = False
    words: list[str] = []
    for ch in cmdline + " ":
        if ch == '"':
            quoted = not quoted
        elif ch.isspace() and not quoted:
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(ch)
    for w in words:
        if w == "--":
            break
        name, sep, value = w.partition("=")
        out.append((name, value if sep else None))
    return out


def _kstrtoul(text: str) -> int | None:
    """The kernel's kstrtoul(base 0): 0x… hex, 0… octal, else decimal; an optional final newline."""
    t = text[:-1] if text.endswith("\n") else text
    t = t[1:] if t.startswith("+") else t
    try:
        if t[:2].lower() == "0x":
            return int(t[2:], 16) if t[2:] else None
        if len(t) > 1 and t.startswith("0"):
            return int(t[1:], 8)
        return int(t, 10) if t.isdigit() else None
    except ValueError:
        return None


def _problems(
    name: str, value: str | None, approved: set[str], require_selinux: bool
) -> list[tuple[str, str]]:
    """(reason, message) for each way one parameter weakens SELinux; [] for a harmless one."""
    shown = name if value is None else f"{name}={value}"
    if name in ("selinux", "enforcing"):
        number = _kstrtoul(value) if value is not None else None
        if number is None:
            return [("cmdline_lsm_option_unclear", f"{shown!r} is not a number to the kernel")]
        if number == 0 and name == "selinux":
            return [("cmdline_selinux_disabled", f"{shown!r} disables SELinux")]
        if number == 0:
            return [("cmdline_selinux_permissive", f"{shown!r} boots SELinux permissive")]
        return []
    if name not in ("security", "lsm"):
        return []
    lsms = [x for x in (value or "").split(",") if x] if name == "lsm" else [value or ""]
    out = [
        ("cmdline_lsm_not_approved", f"{shown!r} selects LSM {lsm!r}; approved: "
         f"{', '.join(sorted(approved))}")
        for lsm in lsms
        if lsm not in approved
    ]  # fmt: skip
    if require_selinux and "selinux" not in lsms:
        out.append(
            ("cmdline_selinux_disabled", f"{shown!r} leaves SELinux out of the LSMs started")
        )
    return out


def check_lsm_cmdline(
    cmdline: str,
    *,
    approved_lsms: Iterable[str] = DEFAULT_LSMS,
    require_selinux: bool = True,
    event: int | None = None,
    pcr: int | None = None,
) -> list[Check]:
    """Checks that the command line keeps SELinux on and enforcing and names only approved LSMs.

    Reasons: ``cmdline_selinux_disabled`` (``selinux=0``, or a ``security=``/``lsm=`` without
    selinux when it is required), ``cmdline_selinux_permissive`` (``enforcing=0``),
    ``cmdline_lsm_not_approved`` (an LSM outside ``approved_lsms``), ``cmdline_lsm_option_unclear``
    (a value the kernel would not parse as a number); one ``cmdline_lsm_ok`` pass otherwise.
    """
    approved = set(approved_lsms)
    checks = [
        Check("boot.cmdline.lsm", FAIL, reason, f"kernel command line: {message}", pcr=pcr,
              event=event, got=name if value is None else f"{name}={value}")
        for name, value in kernel_params(cmdline)
        for reason, message in _problems(name, value, approved, require_selinux)
    ]  # fmt: skip
    if not checks:
        message = "the kernel command line keeps SELinux on and enforcing, approved LSMs only"
        checks.append(
            Check("boot.cmdline.lsm", PASS, "cmdline_lsm_ok", message, pcr=pcr, event=event)
        )
    return checks
