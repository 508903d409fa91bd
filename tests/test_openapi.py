"""docs/openapi.yaml is the API's contract and cannot drift from the code: a route, a method, a path
or query parameter, a success status, an error code or an error status that exists on one side
only fails here. What each operation answers at run time is checked by the fuzzing
(tests/test_api_fuzz.py: schemathesis against a real verifier, every response against this document).

The code side is read from the app's URL map and, for what Flask does not record (query
parameters, the actions of the generic ``<action>`` routes, error codes), from the handlers' and
the domain modules' syntax trees.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask

from verifier.service import ServiceConfig, create_app
from verifier.store import Store, upgrade

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(DOC.read_text())
METHODS = ("get", "post", "put", "delete")
STATUS_OF = {
    "BadRequest": 400, "Unauthenticated": 401, "Forbidden": 403, "NotFound": 404,
    "Conflict": 409, "Expired": 410, "VerificationFailed": 422,
}  # fmt: skip
# Where the domain errors the API answers with are raised: the service, and the TPM structures it
# verifies (quotes, MakeCredential) whose VerificationFailed reaches the client as a 422.
ERROR_SOURCES = [
    *sorted((ROOT / "verifier" / "service").glob("*.py")),
    ROOT / "assay" / "tpm2" / "quote.py",
    ROOT / "assay" / "tpm2" / "credential.py",
]
# Codes made at run time rather than written at a raise, each with where it comes from.
RUNTIME_CODES = {
    # verifier/store/repo.py check_nonce returns them; attestation.submit raises them as 422.
    "nonce_unknown": {422}, "nonce_wrong_node": {422}, "nonce_reused": {422},
    "nonce_expired": {422},
    # api_errors._werkzeug: Werkzeug's own refusals under their names.
    "not_found": {404}, "method_not_allowed": {405}, "request_entity_too_large": {413},
    # api_errors._store: a locked or unreachable database.
    "database_busy": {503}, "database_unavailable": {503},
    # api_errors: MalformedEvidence anywhere below the service.
    "malformed_evidence": {400},
    # enrollment: the identity table of (lookup, "AK", "ak_in_use").
    "ak_in_use": {409},
}  # fmt: skip
NEVER_DOCUMENTED = {"configuration_error", "internal_error"}
"""500s: an unusable configuration or a bug, which the fuzzing must never meet."""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    db = str(tmp_path_factory.mktemp("openapi") / "v.db")
    upgrade(Store(db))
    return create_app(ServiceConfig(database=db))


def _template(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+(?:\([^)]*\))?:)?([a-z_]+)>", r"{\1}", rule)


def _function(view: Callable[..., Any]) -> ast.FunctionDef:
    view = inspect.unwrap(view)
    tree = ast.parse(textwrap.dedent(inspect.getsource(view)))
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef)
    return node


def _literals(view: Callable[..., Any], name: str) -> list[str]:
    """The literals a path variable ``name`` is compared with in the handler (its concrete paths:
    ``…/<decision>`` handled as ``approve`` and ``reject``)."""
    found = []
    for node in ast.walk(_function(view)):
        if (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Name)
            and node.left.id == name
            and isinstance(node.comparators[0], ast.Constant)
        ):
            found.append(str(node.comparators[0].value))
    return found


def _expand(template: str, view: Callable[..., Any]) -> list[str]:
    paths = [template]
    for name in re.findall(r"\{([a-z_]+)\}", template):
        values = _literals(view, name)
        if values:
            paths = [p.replace("{" + name + "}", v) for p in paths for v in values]
    return paths


def _code_operations(app: Flask) -> Iterator[tuple[str, str, Callable[..., Any]]]:
    """Every operation of the API: /v1/…, /healthz and /readyz (the console's pages under /ui/
    are HTML, docs/console.md, not this API)."""
    for rule in app.url_map.iter_rules():
        if not (rule.rule.startswith("/v1/") or rule.rule in ("/healthz", "/readyz")):
            continue
        view = app.view_functions[rule.endpoint]
        paths = _expand(_template(rule.rule), view)
        for method in sorted(m.lower() for m in rule.methods or () if m.lower() in METHODS):
            for path in paths:
                yield method, path, view


def _spec_operations() -> set[tuple[str, str]]:
    return {(m, p) for p, item in SPEC["paths"].items() for m in item if m in METHODS}


def _operation(method: str, path: str) -> dict[str, Any]:
    op: dict[str, Any] = SPEC["paths"][path][method]
    return op


def test_every_route_is_documented_and_every_documented_route_exists(app: Flask) -> None:
    code = {(m, p) for m, p, _ in _code_operations(app)}
    assert sorted(code - _spec_operations()) == [], "routes missing from docs/openapi.yaml"
    assert sorted(_spec_operations() - code) == [], "documented routes the app does not serve"


def _query_args(view: Callable[..., Any]) -> set[str]:
    """``request.args.get("x")``, ``request.args.getlist("x")``, ``_int_arg("x", …)``, ``_number_arg("x", …)``."""
    names = set()
    for node in ast.walk(_function(view)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        first = node.args[0]
        func = node.func
        is_args = (
            isinstance(func, ast.Attribute)
            and func.attr in ("get", "getlist")
            and isinstance(func.value, ast.Attribute)
            and func.value.attr == "args"
        )
        is_int_arg = isinstance(func, ast.Name) and func.id in ("_int_arg", "_number_arg")
        if (is_args or is_int_arg) and isinstance(first, ast.Constant):
            names.add(str(first.value))
    return names


def test_path_and_query_parameters_match(app: Flask) -> None:
    for method, path, view in _code_operations(app):
        params = _operation(method, path).get("parameters", [])
        documented_path = {p["name"] for p in params if p["in"] == "path"}
        assert documented_path == set(re.findall(r"\{([a-z_]+)\}", path)), (method, path)
        documented_query = {p["name"] for p in params if p["in"] == "query"}
        assert documented_query == _query_args(view), (method, path)


def _success_status(view: Callable[..., Any]) -> int:
    """201 when the handler returns ``(…, 201)``, else 200."""
    for node in ast.walk(_function(view)):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            status = node.value.elts[-1]
            if isinstance(status, ast.Constant) and isinstance(status.value, int):
                return status.value
    return 200


def test_success_status_of_every_operation_matches(app: Flask) -> None:
    for method, path, view in _code_operations(app):
        documented = {int(s) for s in _operation(method, path)["responses"] if s.startswith("2")}
        assert documented == {_success_status(view)}, (method, path)


def _module_constants(tree: ast.Module) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    out[target.id] = node.value.value
    return out


def _literal(node: ast.expr | None, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _raised_codes(path: Path) -> Iterator[tuple[str, int]]:
    """(code, status) of every domain or HTTP error constructed in ``path``."""
    tree = ast.parse(path.read_text())
    constants = _module_constants(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        name = node.func.id
        if name in STATUS_OF and name != "VerificationFailed" and node.args:
            code = _literal(node.args[0], constants)
            if code is not None:
                yield code, STATUS_OF[name]
        elif name == "VerificationFailed":
            kw = next((k.value for k in node.keywords if k.arg == "code"), None)
            code = _literal(kw, constants)
            if code is not None:
                yield code, 422
        elif name in ("HttpError", "error_response") and len(node.args) >= 2:
            status, code = node.args[0], _literal(node.args[1], constants)
            if isinstance(status, ast.Constant) and code is not None:
                yield code, int(status.value)


def _code_error_codes() -> dict[str, set[int]]:
    found: dict[str, set[int]] = {k: set(v) for k, v in RUNTIME_CODES.items()}
    for path in ERROR_SOURCES:
        for code, status in _raised_codes(path):
            found.setdefault(code, set()).add(status)
    return {k: v for k, v in found.items() if k not in NEVER_DOCUMENTED}


def test_every_error_code_is_documented_with_its_statuses_and_no_other() -> None:
    documented = {k: set(v) for k, v in SPEC["components"]["x-error-codes"].items()}
    code = _code_error_codes()
    assert sorted(set(code) - set(documented)) == [], "error codes missing from the document"
    assert sorted(set(documented) - set(code)) == [], "documented error codes nothing raises"
    wrong = {k: (documented[k], code[k]) for k in code if documented[k] != code[k]}
    assert wrong == {}, "documented status differs from the code's"
    enum = SPEC["components"]["schemas"]["ErrorCode"]["enum"]
    assert sorted(enum) == sorted(documented)


def test_runtime_codes_come_from_where_the_table_says() -> None:
    repo = (ROOT / "verifier" / "store" / "repo.py").read_text()
    for code in ("nonce_unknown", "nonce_wrong_node", "nonce_reused", "nonce_expired"):
        assert f'"{code}"' in repo
    assert '"ak_in_use"' in (ROOT / "verifier" / "service" / "enrollment.py").read_text()
    errors = (ROOT / "verifier" / "service" / "api_errors.py").read_text()
    assert '"database_busy"' in errors and '"database_unavailable"' in errors


def test_every_error_status_is_documented_somewhere_and_each_documented_one_is_made() -> None:
    made = {s for statuses in _code_error_codes().values() for s in statuses} - {405}
    documented = {
        int(s)
        for item in SPEC["paths"].values()
        for method, op in item.items()
        if method in METHODS
        for s in op["responses"]
        if int(s) >= 400
    }
    assert documented == made


def test_the_service_serves_this_document(app: Flask) -> None:
    served = app.test_client().get("/v1/openapi.json")
    assert served.status_code == 200 and served.json == SPEC
    package_copy = ROOT / "verifier" / "service" / "openapi.yaml"
    assert DOC.resolve() == package_copy.resolve() or DOC.read_text() == package_copy.read_text()


def test_roles_in_the_document_are_those_the_handlers_require(app: Flask) -> None:
    for method, path, view in _code_operations(app):
        required = sorted(getattr(view, "required_roles", ()))
        assert sorted(_operation(method, path).get("x-roles", [])) == required, (method, path)
