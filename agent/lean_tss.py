"""Build tpm2-pytss without FAPI into an environment: the lean agent, wherever it is installed.

``pip install assay[agent]`` builds tpm2-pytss from source (PyPI has no Linux wheel), and its build
enables FAPI whenever pkg-config finds ``tss2-fapi`` — as on Debian 12, whose ``libtss2-dev``
ships it. Its extension module then links libtss2-fapi and, through it, libcurl, GnuTLS, Kerberos,
LDAP and some 25 other libraries that every agent would map for nothing (docs/agent.md). The build
takes "no ``tss2-fapi.pc``" as "no FAPI", so this rebuilds it with a pkg-config directory holding
every ``.pc`` file but those of FAPI and the policy library:

    python -m agent.lean_tss [--python PYTHON] [--spec 'tpm2-pytss>=2.2'] [-c constraints.txt]

It does nothing when the environment's tpm2-pytss has no FAPI already, and fails (exit 1, one
line) when the rebuilt one still has it. Standard library only, so ``scripts/_setup.sh`` runs this
file before assay itself is installed: the repository's venv, ``scripts/install-agent`` and an
operator's ``pip install`` get the same build. Never imported by the running agent.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_SPEC = "tpm2-pytss>=2.2"
HIDDEN = ("tss2-fapi.pc", "tss2-policy.pc")
_PROBE = "import sys, tpm2_pytss; sys.exit(10 if hasattr(tpm2_pytss, 'FAPI') else 0)"


def has_fapi(python: str) -> bool | None:
    """True/False for the environment's tpm2-pytss; None when it is not installed."""
    done = subprocess.run([python, "-c", _PROBE], capture_output=True, timeout=120)
    return {0: False, 10: True}.get(done.returncode)


def pc_dirs() -> list[Path]:
    out = subprocess.run(
        ["pkg-config", "--variable", "pc_path", "pkg-config"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    extra = os.environ.get("PKG_CONFIG_PATH", "")
    return [Path(d) for d in (extra + ":" + out.strip()).split(":") if d]


def lean_pc_dir(into: Path) -> Path:
    """A pkg-config directory with links to every ``.pc`` file but FAPI's and policy's."""
    for directory in pc_dirs():
        for pc in sorted(directory.glob("*.pc")) if directory.is_dir() else ():
            link = into / pc.name
            if pc.name not in HIDDEN and not link.exists():
                link.symlink_to(pc)
    return into


def build(python: str, spec: str, constraints: str | None) -> None:
    """Reinstall ``spec`` from source in ``python``'s environment, FAPI hidden from the build."""
    with tempfile.TemporaryDirectory(prefix="assay-pc-") as tmp:
        env = {**os.environ, "PKG_CONFIG_LIBDIR": str(lean_pc_dir(Path(tmp)))}
        env.pop("PKG_CONFIG_PATH", None)
        pip = [python, "-m", "pip"]
        subprocess.run([*pip, "uninstall", "-q", "-y", "tpm2-pytss"], capture_output=True)
        # No cache: a wheel built earlier (with FAPI) must not be reused.
        install = [*pip, "install", "-q", "--no-cache-dir", "--no-binary", "tpm2-pytss", spec]
        subprocess.run(install + (["-c", constraints] if constraints else []), env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.lean_tss", description=__doc__)
    parser.add_argument("--python", default=sys.executable, help="the environment's interpreter")
    parser.add_argument(
        "--spec", default=DEFAULT_SPEC, help=f"requirement (default {DEFAULT_SPEC})"
    )
    parser.add_argument("-c", "--constraints", help="pip constraints file (pinned versions)")
    args = parser.parse_args(argv)
    if has_fapi(args.python) is False:
        print("lean_tss: tpm2-pytss is already built without FAPI")
        return 0
    try:
        build(args.python, args.spec, args.constraints)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"lean_tss: building {args.spec} without FAPI failed: {exc}", file=sys.stderr)
        return 1
    if has_fapi(args.python) is not False:
        print("lean_tss: tpm2-pytss still has FAPI after the build", file=sys.stderr)
        return 1
    print(f"lean_tss: {args.spec} built without FAPI")
    return 0


if __name__ == "__main__":
    sys.exit(main())
