"""Install as operators install: `python -m build` makes the wheel and sdist, and the wheel installed
in a fresh venv runs the verifier (`--version`, `db init` with its migrations) and the agent —
with tpm2-pytss built without FAPI by `python -m agent.lean_tss`, the same lean agent as
scripts/install-agent, so `pip install assay[agent]` afterwards builds nothing more.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import agent
import verifier

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
CONSTRAINTS = str(ROOT / "constraints.txt")
# What `agent run` imports; FAPI and what it would bring must not be mapped.
PROBE = """
import agent.__main__, agent.client, agent.node, agent.tpm, tpm2_pytss
print("FAPI" if hasattr(tpm2_pytss, "FAPI") else "no FAPI")
print("\\n".join(sorted({l.split()[5].rsplit("/", 1)[-1] for l in open("/proc/self/maps")
                         if len(l.split()) > 5})))
"""
UNWANTED = ("libtss2-fapi.so", "libcurl", "libgnutls", "libkrb5", "libldap", "libssh2")


@dataclass(frozen=True)
class Built:
    wheel: Path
    sdist: Path


def _run(*cmd: str, cwd: Path | None = None, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Wheel and sdist of a copy of the checkout (the build leaves nothing in the work tree)."""
    src = tmp_path_factory.mktemp("src")
    files = _run("git", "ls-files", "-co", "--exclude-standard", cwd=ROOT).splitlines()
    for name in files:
        path = ROOT / name
        if path.is_file() and not name.startswith(".venv"):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(path.read_bytes())
    _run(sys.executable, "-m", "build", "-q", "--outdir", str(src / "dist"), str(src))
    [wheel] = (src / "dist").glob("*.whl")
    [sdist] = (src / "dist").glob("*.tar.gz")
    return Built(wheel, sdist)


BARE: dict[str, subprocess.CompletedProcess[str]] = {}
"""`assay-agent --help` in the venv before tpm2-pytss was installed."""


@pytest.fixture(scope="module")
def venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv: the wheel, then the lean tpm2-pytss, then the wheel's [agent] extra."""
    path = tmp_path_factory.mktemp("venv") / "v"
    _run(PYTHON, "-m", "venv", str(path))
    pip = [str(path / "bin/python"), "-m", "pip", "install", "-q", "-c", CONSTRAINTS]
    _run(*pip, str(built.wheel))
    BARE["help"] = subprocess.run(
        [str(path / "bin/assay-agent"), "--help"], capture_output=True, text=True, timeout=60
    )
    _run(str(path / "bin/python"), "-m", "agent.lean_tss", "-c", CONSTRAINTS, timeout=900)
    _run(*pip, f"{built.wheel}[agent]")
    yield path


def test_versions_agree_with_pyproject() -> None:
    assert agent.__version__ == verifier.__version__ == PROJECT["version"]


def test_wheel_holds_the_packages_and_migrations_but_no_test_scaffolding(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        names = wheel.namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("assay-")}
    assert tops == {"assay", "agent", "verifier", "golden"}
    versions = [n for n in names if n.startswith("verifier/store/migrations/versions/")]
    assert len(versions) == len(list((ROOT / "verifier/store/migrations/versions").glob("*.py")))
    assert "verifier/store/migrations/env.py" in names
    assert "verifier/service/openapi.yaml" in names  # served at GET /v1/openapi.json


def test_sdist_holds_the_sources_and_pyproject(built: Built) -> None:
    with tarfile.open(built.sdist) as sdist:
        names = sdist.getnames()
    assert "assay-0.1.0/pyproject.toml" in names
    assert "assay-0.1.0/agent/lean_tss.py" in names
    assert "assay-0.1.0/verifier/service/app.py" in names


def test_installed_verifier_prints_its_version_and_creates_a_database(
    venv: Path, tmp_path: Path
) -> None:
    assert _run(str(venv / "bin/assay-verifier"), "--version").strip() == (
        f"assay-verifier {PROJECT['version']}"
    )
    out = _run(str(venv / "bin/assay-verifier"), "db", "init", "--database", str(tmp_path / "v.db"))
    assert "is at revision" in out and "bootstrap admin token" in out


def test_installed_agent_answers_help_and_version(venv: Path) -> None:
    assert "attest" in _run(str(venv / "bin/assay-agent"), "--help")
    assert _run(str(venv / "bin/assay-agent"), "--version").strip() == (
        f"assay-agent {PROJECT['version']}"
    )


def test_installed_agent_is_the_lean_one(venv: Path) -> None:
    fapi, *libraries = _run(str(venv / "bin/python"), "-c", PROBE).splitlines()
    assert fapi == "no FAPI"
    assert any(lib.startswith("libtss2-esys.so") for lib in libraries)
    assert [lib for lib in libraries if lib.startswith(UNWANTED)] == []
    again = _run(str(venv / "bin/python"), "-m", "agent.lean_tss")
    assert "already built without FAPI" in again


def test_agent_without_tpm2_pytss_says_what_to_install_in_one_line(venv: Path) -> None:
    bare = BARE["help"]
    assert bare.returncode == 2 and bare.stderr.count("\n") == 1
    assert "pip install 'assay[agent]'" in bare.stderr and "agent.lean_tss" in bare.stderr
