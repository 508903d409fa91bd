"""The service's layering: domain modules know nothing of HTTP (no Flask, no JSON responses),
HTTP handlers never touch the store, and every domain error has one status in one place."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import verifier.service as service_pkg
from verifier.service import api_errors, errors

SERVICE = Path(service_pkg.__file__).parent
DOMAIN = ("enrollment", "attestation", "inventory", "golden_ops", "tokens", "audit")
DOMAIN += ("sessions", "incidents", "promotion", "review", "stored_log")
HTTP = ("routes", "review_routes", "auth", "_http")
WEB = tuple(sorted(p.stem for p in (SERVICE.parent / "web").glob("*.py")))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
    return names


@pytest.mark.parametrize("module", DOMAIN)
def test_a_domain_module_imports_nothing_of_the_http_layer(module: str) -> None:
    imported = _imports(SERVICE / f"{module}.py")
    http = {"flask", "werkzeug", ".routes", ".auth", "._http", ".api_errors", ".app"}
    assert not {m for m in imported if m.split(".")[0] in http or m in http}


def test_the_domain_and_the_cli_run_without_flask(tmp_path: Path) -> None:
    """Imported alone, the domain modules pull in no Flask; nor does a CLI command using them."""
    code = (
        "import sys\n"
        f"import {', '.join(f'verifier.service.{m}' for m in DOMAIN)}\n"
        "from verifier._cli import main\n"
        f"main(['db', 'upgrade', '--database', {str(tmp_path / 'v.db')!r}])\n"
        f"assert main(['nodes', 'list', '--json', '--database', {str(tmp_path / 'v.db')!r}]) == 0\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug'))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("module", HTTP)
def test_http_handlers_never_touch_the_store(module: str) -> None:
    path = SERVICE / f"{module}.py"
    assert not {m for m in _imports(path) if m.startswith("verifier.store")}
    stores = [
        n.lineno
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Attribute) and n.attr == "store"  # svc.store.read() / .write()
    ]
    assert stores == [], f"{path.name} opens the store at lines {stores}"


@pytest.mark.parametrize("module", WEB)
def test_console_views_never_touch_the_store(module: str) -> None:
    """The console (verifier/web) reads and acts only through the service's domain functions: no
    models, no repository (only the store's StoreUnavailable error, to map it to a page)."""
    path = SERVICE.parent / "web" / f"{module}.py"
    assert not {m for m in _imports(path) if m.startswith("verifier.store.")}
    stores = [
        n.lineno
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Attribute) and n.attr == "store"
    ]
    assert stores == [], f"{path.name} opens the store at lines {stores}"


def test_every_domain_error_has_one_status() -> None:
    kinds = [errors.BadRequest, errors.Unauthenticated, errors.Forbidden, errors.NotFound]
    kinds += [errors.Conflict, errors.Expired]
    statuses = [api_errors.status_of(kind("code", "message")) for kind in kinds]
    assert statuses == [400, 401, 403, 404, 409, 410]
    assert set(errors.ServiceError.__subclasses__()) == set(kinds)
