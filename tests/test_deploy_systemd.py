"""deploy/systemd: the units as scripts/install-* stage them, checked by systemd's own tools.

systemd is not booted here, so the units are never started; what is checked is what
`systemd-analyze verify` (syntax, references, executables) and `systemd-analyze security
--offline` (the exposure score of each service's sandbox) say about the installed files, in a
DESTDIR-style root the install scripts fill.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted(p.name for p in (ROOT / "deploy" / "systemd").iterdir())
SERVICES = [u for u in UNITS if u.endswith(".service")]
MAX_EXPOSURE = 4.0

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze (Debian's systemd) missing"
)


def _install(script: str, destdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / script), "--units-only", *args],
        env={**os.environ, "DESTDIR": str(destdir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def _directives(text: str) -> Iterator[tuple[str, str]]:
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            yield key.strip(), value.strip()


def _values(unit: Path, key: str) -> list[str]:
    return [v for k, v in _directives(unit.read_text()) if k == key]


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both install scripts run into one root, with systemd's own units beside ours (for
    `verify --root`) and a stand-in for each executable the units start (the venvs are not built)."""
    root = tmp_path_factory.mktemp("root")
    _install("install-verifier", root)
    _install("install-agent", root)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for unit in (root / "etc/systemd/system").glob("assay-*.service"):
        for command in _values(unit, "ExecStart"):
            exe = root / command.split()[0].lstrip("/")
            exe.parent.mkdir(parents=True, exist_ok=True)
            exe.write_text("#!/bin/sh\n")
            exe.chmod(0o755)
    return root


def test_install_scripts_stage_every_unit_config_and_sysusers_file(staged: Path) -> None:
    installed = sorted(p.name for p in (staged / "etc/systemd/system").glob("assay-*"))
    assert installed == UNITS
    assert (staged / "usr/lib/sysusers.d/assay-verifier.conf").read_text().count("\nu ") == 1
    agent_yaml = staged / "etc/assay/agent.yaml"
    assert stat.S_IMODE(agent_yaml.stat().st_mode) == 0o600  # it will hold the enroll token
    assert (staged / "etc/assay/verifier.yaml").exists()
    assert (staged / "opt/assay-verifier/share/doc/assay/operations.md").exists()
    assert (staged / "opt/assay-agent/share/doc/assay/agent.md").exists()


def test_install_keeps_an_operators_config_and_substitutes_the_prefix(tmp_path: Path) -> None:
    conf = tmp_path / "etc/assay/verifier.yaml"
    conf.parent.mkdir(parents=True)
    conf.write_text("database: /srv/v.db\n")
    out = _install("install-verifier", tmp_path, "/srv/assay")
    assert conf.read_text() == "database: /srv/v.db\n"
    assert "keeping" in out.stderr
    unit = tmp_path / "etc/systemd/system/assay-verifier.service"
    assert _values(unit, "ExecStart") == [
        "/srv/assay/bin/assay-verifier serve --config /etc/assay/verifier.yaml"
    ]
    assert "/opt/assay" not in unit.read_text()


@pytest.mark.parametrize("unit", UNITS)
def test_unit_passes_systemd_analyze_verify(staged: Path, unit: str) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={staged}", unit],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.mark.parametrize("unit", SERVICES)
def test_service_exposure_is_ok_or_better(staged: Path, unit: str) -> None:
    path = staged / "etc/systemd/system" / unit
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--threshold={MAX_EXPOSURE * 10:.0f}",
         "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, found.group(0)
    assert found.group(2) in ("PERFECT", "SAFE", "OK"), found.group(0)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("unit", SERVICES)
def test_service_has_the_sandbox_the_issue_lists(unit: str) -> None:
    path = ROOT / "deploy/systemd" / unit
    settings = dict(_directives(path.read_text()))
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "StandardOutput": "journal",
        "DevicePolicy": "closed",
    }.items():
        assert settings.get(key) == value, f"{unit}: {key}={settings.get(key)!r}"
    assert "@system-service" in _values(path, "SystemCallFilter")
    assert settings.get("User") in ("root", "assay-verifier")
    if settings["Type"] != "oneshot":
        assert settings.get("Restart") in ("on-failure", "always")


def test_only_the_agent_reaches_the_tpm_and_securityfs() -> None:
    agent = ROOT / "deploy/systemd/assay-agent.service"
    assert _values(agent, "DeviceAllow") == ["/dev/tpmrm0 rw"]
    assert _values(agent, "ReadOnlyPaths") == ["/sys/kernel/security"]
    for unit in SERVICES:
        if unit != "assay-agent.service":
            path = ROOT / "deploy/systemd" / unit
            assert _values(path, "DeviceAllow") == [] and _values(path, "PrivateDevices") == ["yes"]
            assert _values(path, "User") == ["assay-verifier"]
