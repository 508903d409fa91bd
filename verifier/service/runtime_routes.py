"""HTTP handlers for runtime (IMA) policies, mirroring the golden sets' (docs/api.md "Runtime
policies"). Thin like ``routes``: decode, call ``runtime_ops``, encode.

Who: reviewer and admin read; only an admin adds, assigns, activates, retires or revokes.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from . import runtime_ops
from ._http import (
    json_body,
    label_query,
    labels_field,
    path_text,
    read_body,
    reason_field,
    services,
    text_field,
)
from .auth import ADMIN, REVIEW, actor, require
from .errors import BadRequest, NotFound
from .lifecycle import Transition

runtime_bp = Blueprint("runtime", __name__, url_prefix="/v1")


@runtime_bp.get("/runtime-policies")
@require(*REVIEW)
def list_runtime() -> Response:
    return jsonify(runtime_ops.list_policies(services()).to_json())


@runtime_bp.get("/runtime-policies/<name>/<version>")
@require(*REVIEW)
def show_runtime(name: str, version: str) -> Response:
    path_text(name, "runtime policy", 200), path_text(version, "runtime policy version", 64)
    return jsonify(runtime_ops.show(services(), name, version).to_json())


@runtime_bp.post("/runtime-policies")
@require(*ADMIN)
def add_runtime() -> tuple[Response, int]:
    """The YAML document as the body; ``?label=k=v`` (repeated) assigns it at once."""
    selector = label_query(request.args.getlist("label"))
    data = read_body(runtime_ops.MAX_RUNTIME + 1)
    if not data:
        raise BadRequest("bad_field", "send the runtime policy (YAML)")
    out = runtime_ops.upload(services(), data, actor(), selector)
    return jsonify(out.to_json()), 201


@runtime_bp.post("/runtime-policies/assignments")
@require(*ADMIN)
def assign_runtime() -> Response:
    body = json_body()
    name = text_field(body, "policy", max_len=200)
    out = runtime_ops.assign(services(), name, labels_field(body, "selector"), actor())
    return jsonify(out.to_json())


@runtime_bp.post("/runtime-policies/<name>/<version>/<any(activate, retire, revoke):action>")
@require(*ADMIN)
def runtime_status(name: str, version: str, action: str) -> Response:
    path_text(name, "runtime policy", 200), path_text(version, "runtime policy version", 64)
    status: Transition
    if action == "activate":
        status = "active"
    elif action == "retire":
        status = "retired"
    elif action == "revoke":
        status = "revoked"
    else:
        raise NotFound("not_found", f"unknown runtime policy action {action!r}")
    reason = reason_field(json_body(required=status == "revoked"), required=status == "revoked")
    out = runtime_ops.set_status(services(), name, version, status, reason, actor())
    return jsonify(out.to_json())
