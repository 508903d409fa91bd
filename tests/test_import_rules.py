"""Dependencies point one way (issue 11 §4), checked statically over every import statement.

assay/ (wire formats) imports none of agent, verifier, golden, testkit; agent/ none of verifier,
golden, testkit; golden/ none of verifier, agent, testkit; verifier/ not testkit. testkit/ (test and
demo scaffolding) is for tests/ and scripts/ only, and is not in the wheel. Imports inside
functions and under ``TYPE_CHECKING`` count; relative imports are resolved against the importing
module. A failure names each offending file, line and statement.
"""

from __future__ import annotations

import ast
import fnmatch
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("assay", "agent", "verifier", "golden", "testkit")


@dataclass(frozen=True)
class Import:
    path: str
    line: int
    statement: str
    modules: tuple[str, ...]
    """Every module the statement may load: ``from a import b`` gives ``a`` and ``a.b``."""


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute module of ``from {'.' * level}{module} import …`` inside ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(source: str, importer: str, is_package: bool, path: str) -> Iterator[Import]:
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            modules = tuple(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = resolve(importer, is_package, node.level, node.module)
            modules = (target, *(f"{target}.{alias.name}" for alias in node.names))
        else:
            continue
        yield Import(path, node.lineno, ast.unparse(node), modules)


def package_imports(package: str) -> list[Import]:
    out: list[Import] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        out += imports_of(
            path.read_text(encoding="utf-8"),
            module_name(path),
            path.name == "__init__.py",
            str(path.relative_to(ROOT)),
        )
    return out


def offending(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{imp.path}:{imp.line}: {imp.statement}"
        for imp in package_imports(package)
        if any(m.split(".")[0] in forbidden for m in imp.modules)
    ]


def _check(package: str, forbidden: tuple[str, ...]) -> None:
    bad = offending(package, forbidden)
    assert not bad, f"{package}/ must not import {', '.join(forbidden)}:\n" + "\n".join(bad)


# --- the rules -----------------------------------------------------------------------------------


def test_assay_imports_none_of_agent_verifier_golden_testkit() -> None:
    _check("assay", ("agent", "verifier", "golden", "testkit"))


def test_agent_imports_none_of_verifier_golden_testkit() -> None:
    _check("agent", ("verifier", "golden", "testkit"))


def test_golden_imports_nothing_from_verifier() -> None:
    _check("golden", ("verifier",))


def test_golden_imports_neither_agent_nor_testkit() -> None:
    _check("golden", ("agent", "testkit"))


def test_no_product_package_imports_the_scaffolding() -> None:
    for package in ("assay", "agent", "verifier", "golden"):
        _check(package, ("testkit",))


def test_the_scaffolding_is_not_in_the_wheel() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for name in ("testkit", "testkit.swtpm", "tests"):
        assert not any(fnmatch.fnmatchcase(name, pattern) for pattern in include), (name, include)
    assert all(any(fnmatch.fnmatchcase(p, pat) for pat in include) for p in PACKAGES[:4])


# --- the checker itself --------------------------------------------------------------------------


def _modules(source: str, importer: str, *, is_package: bool = False) -> list[str]:
    return [m for imp in imports_of(source, importer, is_package, "x.py") for m in imp.modules]


def test_relative_imports_are_resolved_against_the_importer() -> None:
    assert _modules("from . import swtpm", "agent.node") == ["agent", "agent.swtpm"]
    assert _modules("from .tpm import Tpm", "agent.node") == ["agent.tpm", "agent.tpm.Tpm"]
    assert _modules("from ..store import repo", "verifier.service.routes") == [
        "verifier.store",
        "verifier.store.repo",
    ]
    assert _modules("from . import x", "verifier.service", is_package=True) == [
        "verifier.service",
        "verifier.service.x",
    ]
    assert _modules("from .. import y", "verifier.service", is_package=True) == [
        "verifier",
        "verifier.y",
    ]


def test_imports_inside_functions_and_type_checking_blocks_count() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import verifier.store\n"
        "def f():\n    from golden import capture\n"
    )
    found = _modules(source, "agent.x")
    assert "verifier.store" in found and "golden.capture" in found


def test_a_violation_names_the_file_line_and_statement() -> None:
    _, imp = imports_of("import os\n\nfrom ..service import testing\n", "a.b.c", False, "a/b/c.py")
    assert (imp.path, imp.line, imp.statement) == (
        "a/b/c.py",
        3,
        "from ..service import testing",
    )
    assert imp.modules == ("a.service", "a.service.testing")


def test_every_package_is_scanned() -> None:
    for package in PACKAGES:
        found = package_imports(package)
        assert found, package
        assert all(imp.path.startswith(f"{package}/") for imp in found)
    assert any("assay.evidence" in imp.modules for imp in package_imports("agent"))
