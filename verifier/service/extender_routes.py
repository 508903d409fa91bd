"""``POST /k8s/extender/filter`` and ``/k8s/extender/prioritize`` (kube-scheduler extender v1).

kube-scheduler sends no bearer token (its extender configuration has TLS settings only), so
these routes take none: they are off unless ``extender_enabled`` and should be reachable only by
the scheduler (network policy, or TLS with client certificates). They reveal no more than
whether each named node is schedulable. A body that cannot be read is a 400 whose JSON carries
both the API's ``error`` and the protocol's ``Error``, so the scheduler fails closed.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, jsonify, request

from assay.errors import MalformedEvidence
from verifier.k8s import extender

from ._http import read_body, services
from .api_errors import HttpError
from .errors import NotFound
from .standings import standings

extender_bp = Blueprint("extender", __name__, url_prefix="/k8s/extender")
MAX_BODY = 64 * 1024 * 1024


def _refuse(names: tuple[str, ...], code: str, message: str) -> tuple[Response, int]:
    body = extender.error_result(message, names)
    body["error"] = {"code": code, "message": message}
    return jsonify(body), 400


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _args() -> extender.ExtenderArgs:
    svc = services()
    if not svc.config.extender_enabled:
        raise NotFound("not_found", "the scheduler extender is not enabled (extender_enabled)")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise HttpError(413, "too_large", f"ExtenderArgs larger than {MAX_BODY} bytes")
    raw = read_body(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise HttpError(413, "too_large", f"ExtenderArgs larger than {MAX_BODY} bytes")
    try:
        body = json.loads(raw, parse_constant=_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise MalformedEvidence(f"not JSON: {str(exc)[:200]}", where="ExtenderArgs") from None
    return extender.parse_args(body)


def _judge() -> extender.Judge:
    svc = services()
    known = standings(svc)
    now = svc.now().timestamp()
    return lambda names: known.judge(names, now)


def _json(data: Any) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), mimetype="application/json")


@extender_bp.post("/filter")
def filter_nodes() -> Response | tuple[Response, int]:
    try:
        args = _args()
    except MalformedEvidence as exc:
        return _refuse((), "malformed_json", str(exc))
    return _json(extender.filter_nodes(args, _judge()))


@extender_bp.post("/prioritize")
def prioritize() -> Response | tuple[Response, int]:
    try:
        args = _args()
    except MalformedEvidence as exc:
        return _refuse((), "malformed_json", str(exc))
    return _json(extender.prioritize(args, _judge()))
