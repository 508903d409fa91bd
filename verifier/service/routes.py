"""HTTP handlers, one blueprint per area. Each handler: decode → domain call → encode; none
touches the store, and every refusal is a domain error that ``api_errors`` maps to a status.

Who may call what (``auth.require``): enrollment start — enroll, admin; activation, challenge,
evidence — the agent (no token: possession of the activated secret / the AK signature over the
verifier's nonce); node list and node — scheduler, reviewer, admin; attestations, evidence,
golden reads, audit — reviewer, admin; every change to golden sets, nodes and tokens, and the
token list — admin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request

from assay.evidence import Evidence, encode_evidence

from . import attestation, audit, enrollment, golden_ops, inventory, rollout, tokens
from ._answer import json_answer
from ._http import (
    b64_field,
    json_body,
    label_query,
    labels_field,
    node_field,
    path_text,
    printable,
    read_body,
    reason_field,
    services,
    text_field,
)
from .api_errors import HttpError
from .auth import ADMIN, ENROLL, READ_INVENTORY, REVIEW, actor, current_caller, require
from .context import Services
from .errors import BadRequest, NotFound

enrollment_bp = Blueprint("enrollment", __name__, url_prefix="/v1")
attestation_bp = Blueprint("attestation", __name__, url_prefix="/v1")
inventory_bp = Blueprint("inventory", __name__, url_prefix="/v1")
golden_bp = Blueprint("golden", __name__, url_prefix="/v1")
admin_bp = Blueprint("admin", __name__, url_prefix="/v1")

BLUEPRINTS = (enrollment_bp, attestation_bp, inventory_bp, golden_bp, admin_bp)
MAX_KEY = 2048
MAX_CERT = 8192
MAX_TTL = 10 * 366 * 86400


# --- enrollment ---------------------------------------------------------------------------


@enrollment_bp.post("/enrollments")
@require(*ENROLL, domain_uses_token=True)  # step 6 of enrollment.start
def start_enrollment() -> tuple[Response, int]:
    body = json_body()
    if labels_field(body):
        raise BadRequest(
            "labels_not_accepted",
            "a node may not choose its labels: they come from the enrollment token or an admin",
        )
    req = enrollment.EnrollmentRequest(
        node=node_field(body),
        ek_cert=b64_field(body, "ek_cert", max_len=MAX_CERT, required=False),
        ek_public=_req(b64_field(body, "ek_public", max_len=MAX_KEY)),
        ak_public=_req(b64_field(body, "ak_public", max_len=MAX_KEY)),
    )
    ch = enrollment.start(services(), req, current_caller())
    return jsonify(ch.to_json()), 201


@enrollment_bp.post("/enrollments/<enrollment_id>/activation")
def activate(enrollment_id: str) -> Response:
    path_text(enrollment_id, "enrollment", 64)
    _rate_limit()
    body = json_body()
    secret = _req(b64_field(body, "secret", max_len=64))
    key = text_field(body, "activation_key", required=False, max_len=64)
    return jsonify(enrollment.activate(services(), enrollment_id, secret, key).to_json())


def _rate_limit() -> None:
    """Unauthenticated endpoints: a token bucket per client address (429 ``rate_limited``)."""
    rate_limit(services(), request.remote_addr)


def rate_limit(svc: Services, remote_addr: str | None) -> None:
    if not svc.unauthenticated.allow(remote_addr or "?", svc.monotonic()):
        raise HttpError(429, "rate_limited", "too many requests from this address; slow down")


def _is_hex(text: str, size: int) -> bool:
    return len(text) == 2 * size and all(c in "0123456789abcdefABCDEF" for c in text)


def _req(value: bytes | None) -> bytes:
    assert value is not None
    return value


# --- attestation --------------------------------------------------------------------------


@attestation_bp.post("/nodes/<node>/challenge")
def challenge(node: str) -> tuple[Response, int]:
    path_text(node, "node")
    _rate_limit()
    body = json_body(required=False)
    digest = body.get("event_log_sha256")
    if digest is not None and (not isinstance(digest, str) or not _is_hex(digest, 32)):
        raise BadRequest("bad_field", "event_log_sha256 must be 64 hex digits")
    ch = attestation.challenge(services(), node, digest.lower() if digest else None)
    return jsonify(ch.to_json()), 201


@attestation_bp.post("/nodes/<node>/evidence")
def evidence(node: str) -> Response:
    """Served by ``_evidence_wsgi`` in front of Flask; this route is what it hands back (a
    request it does not recognise exactly) and what it must equal."""
    svc = services()
    answer = evidence_answer(
        svc, node, request.remote_addr, lambda: request.mimetype, request.content_length,
        lambda: read_body(svc.config.max_bundle + 1),
    )  # fmt: skip
    return json_answer(answer)


def evidence_answer(
    svc: Services,
    node: str,
    remote_addr: str | None,
    mimetype: Callable[[], str],
    length: int | None,
    read: Callable[[], bytes],
) -> dict[str, Any]:
    """``POST /v1/nodes/{node}/evidence``: the checks in order, then ``submit``; the 200 body.
    ``read`` reads at most ``max_bundle + 1`` bytes of the body."""
    path_text(node, "node")
    rate_limit(svc, remote_addr)
    if mimetype() != "application/cbor":
        raise HttpError(415, "unsupported_media_type", "send Content-Type: application/cbor")
    if length is not None and length > svc.config.max_bundle:
        raise HttpError(413, "too_large", f"evidence larger than {svc.config.max_bundle} bytes")
    return attestation.submit(svc, node, read()).to_json()


# --- inventory ----------------------------------------------------------------------------


@inventory_bp.get("/nodes")
@require(*READ_INVENTORY)
def list_nodes() -> Response:
    state = request.args.get("state")
    wanted = None if state is None else inventory.parse_state(state)
    labels = label_query(request.args.getlist("label"))
    booted = request.args.get("booted")
    if booted is not None and (not booted or len(booted) > 265 or not booted.isprintable()):
        raise BadRequest("bad_query", "booted must be NAME@VERSION (printable, 1..265 characters)")
    outdated = request.args.get("outdated", "false")
    if outdated not in ("true", "false"):
        raise BadRequest("bad_query", "outdated must be true or false")
    fields = request.args.get("fields")
    if fields is not None and fields != "names":
        raise BadRequest("bad_query", "fields must be 'names' (the names-only form)")
    if fields == "names":
        names = inventory.list_names(
            services(), state=wanted, labels=labels, booted=booted, outdated=outdated == "true"
        )
        return jsonify({"names": names})
    limit = _int_arg("limit", 0, 1, 10_000) or None
    after = request.args.get("after", "")
    if len(after) > 253 or not after.isprintable():
        raise BadRequest("bad_query", "after must be a node name")
    page = inventory.list_page(
        services(),
        state=wanted,
        labels=labels,
        booted=booted,
        outdated=outdated == "true",
        after=after,
        limit=limit,
    )
    return jsonify({"nodes": [n.to_json() for n in page.nodes], "next": page.next})


@inventory_bp.get("/nodes/<node>")
@require(*READ_INVENTORY)
def show_node(node: str) -> Response:
    path_text(node, "node")
    return jsonify(inventory.show_node(services(), node).to_json())


@inventory_bp.get("/nodes/<node>/attestations")
@require(*REVIEW)
def node_attestations(node: str) -> Response:
    path_text(node, "node")
    limit = _int_arg("limit", 50, 1, 1000)
    rows = inventory.node_history(services(), node, limit=limit)
    return jsonify({"attestations": [r.to_json() for r in rows]})


@inventory_bp.get("/attestations/<att_id>")
@require(*REVIEW)
def show_attestation(att_id: str) -> Response:
    return jsonify(inventory.attestation(services(), att_id).to_json())


@inventory_bp.get("/attestations/<att_id>/evidence")
@require(*REVIEW)
def attestation_evidence(att_id: str) -> Response:
    """The evidence reassembled from what is stored (quote, signature, PCRs, the log by digest)."""
    ev: Evidence = attestation.stored_evidence(services(), att_id)
    return Response(encode_evidence(ev), mimetype="application/cbor")


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    value = request.args.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not lo <= int(value) <= hi:
        raise BadRequest("bad_query", f"{name} must be an integer {lo}..{hi}")
    return int(value)


# --- golden -------------------------------------------------------------------------------


@golden_bp.get("/golden")
@require(*REVIEW)
def list_golden() -> Response:
    return jsonify(golden_ops.list_sets(services()).to_json())


@golden_bp.get("/golden/<name>/<version>")
@require(*REVIEW)
def show_golden(name: str, version: str) -> Response:
    path_text(name, "golden set", 200), path_text(version, "golden version", 64)
    return jsonify(golden_ops.show(services(), name, version).to_json())


@golden_bp.post("/golden")
@require(*ADMIN)
def add_golden() -> tuple[Response, int]:
    fmt = {"application/cbor": "corim", "application/rim+cbor": "corim"}.get(
        request.mimetype, "yaml"
    )
    data = read_body(golden_ops.MAX_GOLDEN + 1)
    if not data:
        raise BadRequest("bad_field", "send the golden set (YAML, or CoRIM as application/cbor)")
    return jsonify(golden_ops.upload(services(), fmt, data, actor()).to_json()), 201


@golden_bp.post("/golden/assignments")
@require(*ADMIN)
def assign_golden() -> Response:
    body = json_body()
    name = text_field(body, "golden", max_len=200)
    out = golden_ops.assign(services(), name, labels_field(body, "selector"), actor())
    return jsonify(out.to_json())


@golden_bp.post("/golden/<name>/<version>/<any(retire, revoke):action>")
@require(*ADMIN)
def golden_status(name: str, version: str, action: str) -> Response:
    path_text(name, "golden set", 200), path_text(version, "golden version", 64)
    status: golden_ops.Retirement
    if action == "retire":
        status = "retired"
    elif action == "revoke":
        status = "revoked"
    else:
        raise NotFound("not_found", f"unknown golden action {action!r}")
    reason = reason_field(json_body())
    out = golden_ops.set_status(services(), name, version, status, reason, actor())
    return jsonify(out.to_json())


@golden_bp.get("/rollouts/<name>")
@require(*REVIEW)
def show_rollout(name: str) -> Response:
    path_text(name, "golden set", 200)
    return jsonify(rollout.rollout(services(), name).to_json())


@golden_bp.put("/golden/<name>/<version>/canary")
@require(*ADMIN)
def set_canary(name: str, version: str) -> Response:
    path_text(name, "golden set", 200), path_text(version, "golden version", 64)
    selector = labels_field(json_body(), "selector")
    return jsonify(golden_ops.set_canary(services(), name, version, selector, actor()).to_json())


@golden_bp.delete("/golden/<name>/<version>/canary")
@require(*ADMIN)
def clear_canary(name: str, version: str) -> Response:
    path_text(name, "golden set", 200), path_text(version, "golden version", 64)
    return jsonify(golden_ops.set_canary(services(), name, version, None, actor()).to_json())


# --- admin --------------------------------------------------------------------------------


@admin_bp.post("/nodes/<node>/<any(quarantine, release, replace, reappraise, labels, move):action>")
@require(*ADMIN)
def node_action(node: str, action: str) -> Response:
    path_text(node, "node")
    svc = services()
    body = json_body()
    reason = reason_field(body)
    if action == "move":
        new_name = node_field(body, "to")
        return jsonify(inventory.move_node(svc, node, new_name, reason, actor()).to_json())
    if action == "labels":
        if "labels" not in body:  # absent is not "clear them": that is an explicit {}
            raise BadRequest("bad_field", "field 'labels' is required ({} clears them)")
        view = inventory.set_labels(svc, node, labels_field(body), reason, actor())
        return jsonify(view.to_json())
    if action == "quarantine":
        return jsonify(inventory.quarantine(svc, node, reason, actor()).to_json())
    if action == "release":
        return jsonify(inventory.release(svc, node, reason, actor()).to_json())
    if action == "replace":
        inventory.allow_replace(svc, node, reason, actor())
        return jsonify({"node": node, "replace_allowed": True})
    if action == "reappraise":
        return _reappraised(inventory.reappraise_nodes(svc, [node], reason, actor()))
    raise NotFound("not_found", f"unknown node action {action!r}")


def _reappraised(results: list[inventory.Reappraisal]) -> Response:
    return jsonify({"reappraised": [r.to_json() for r in results]})


@admin_bp.delete("/nodes/<node>")
@require(*ADMIN)
def delete_node(node: str) -> Response:
    path_text(node, "node")
    body = json_body(required=False)
    reason = reason_field(body) if body else reason_field({"reason": request.args.get("reason")})
    inventory.delete_node(services(), node, reason, actor())
    return jsonify({"node": node, "deleted": True})


@admin_bp.post("/admin/reappraise")
@require(*ADMIN)
def reappraise_all() -> Response:
    reason = reason_field(json_body())
    return _reappraised(inventory.reappraise_nodes(services(), None, reason, actor()))


@admin_bp.post("/admin/sweep")
@require(*ADMIN)
def sweep() -> Response:
    return jsonify({"stale": inventory.sweep_stale(services(), actor())})


@admin_bp.post("/tokens")
@require(*ADMIN)
def create_token() -> tuple[Response, int]:
    body = json_body()
    ttl = body.get("ttl")
    if ttl is not None and (
        not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl <= MAX_TTL
    ):
        raise BadRequest("bad_field", f"ttl must be a number of seconds in 1..{MAX_TTL}")
    single_use = body.get("single_use", False)
    if not isinstance(single_use, bool):
        raise BadRequest("bad_field", "single_use must be a boolean")
    desc = body.get("description", "")
    if not isinstance(desc, str):
        raise BadRequest("bad_field", "description must be a string")
    made = tokens.create(
        services(),
        text_field(body, "role", max_len=16),
        ttl=ttl,
        single_use=single_use,
        description=printable(desc[:200], "description"),
        labels=labels_field(body),
        actor=actor(),
    )
    return jsonify(made.to_json()), 201


@admin_bp.get("/tokens")
@require(*ADMIN)
def list_tokens() -> Response:
    return jsonify({"tokens": [t.to_json() for t in tokens.list_all(services())]})


@admin_bp.post("/tokens/<token_id>/revoke")
@require(*ADMIN)
def revoke_token(token_id: str) -> Response:
    reason = reason_field(json_body())
    return jsonify(tokens.revoke(services(), token_id, reason, actor()).to_json())


@admin_bp.get("/audit")
@require(*REVIEW)
def audit_log() -> Response:
    limit = _int_arg("limit", 100, 1, 1000)
    target = request.args.get("target")
    if target is not None and (len(target) > 300 or not target.isprintable()):
        raise BadRequest("bad_query", "target must be printable text of at most 300 characters")
    entries = audit.entries(services(), target=target, limit=limit)
    return jsonify({"audit": [e.to_json() for e in entries]})
