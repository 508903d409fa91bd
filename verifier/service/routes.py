"""HTTP handlers, one blueprint per area. Each handler: decode → domain call → encode.

Who may call what (``auth.require``): enrollment start — enroll, admin; activation, challenge,
evidence — the agent (no token: possession of the activated secret / the AK signature over the
verifier's nonce); node list and node — scheduler, reviewer, admin; attestations, evidence,
golden reads, audit — reviewer, admin; every change to golden sets, nodes and tokens, and the
token list — admin.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from flask import Blueprint, Response, jsonify, request

from verifier.store import repo
from verifier.store.models import Attestation, Node

from . import attestation, enrollment, golden_ops, inventory, tokens
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
    text_field,
)
from .auth import ADMIN, ENROLL, READ_INVENTORY, REVIEW, actor, current_caller, require
from .context import services
from .errors import ApiError, bad_request, not_found
from .evidence import Evidence, encode_evidence

enrollment_bp = Blueprint("enrollment", __name__, url_prefix="/v1")
attestation_bp = Blueprint("attestation", __name__, url_prefix="/v1")
inventory_bp = Blueprint("inventory", __name__, url_prefix="/v1")
golden_bp = Blueprint("golden", __name__, url_prefix="/v1")
admin_bp = Blueprint("admin", __name__, url_prefix="/v1")

BLUEPRINTS = (enrollment_bp, attestation_bp, inventory_bp, golden_bp, admin_bp)
MAX_KEY = 2048
MAX_CERT = 8192
MAX_TTL = 10 * 366 * 86400


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# --- enrollment ---------------------------------------------------------------------------


@enrollment_bp.post("/enrollments")
@require(*ENROLL, domain_uses_token=True)  # step 6 of enrollment.start
def start_enrollment() -> tuple[Response, int]:
    body = json_body()
    if labels_field(body):
        raise bad_request(
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
    return jsonify(
        {
            "enrollment_id": ch.enrollment_id,
            "activation_key": ch.activation_key,
            "credential_blob": _b64(ch.credential_blob),
            "encrypted_secret": _b64(ch.encrypted_secret),
            "expires_at": _iso(ch.expires_at),
        }
    ), 201


@enrollment_bp.post("/enrollments/<enrollment_id>/activation")
def activate(enrollment_id: str) -> Response:
    path_text(enrollment_id, "enrollment", 64)
    _rate_limit()
    body = json_body()
    secret = _req(b64_field(body, "secret", max_len=64))
    key = text_field(body, "activation_key", required=False, max_len=64)
    node = enrollment.activate(services(), enrollment_id, secret, key)
    return jsonify({"node": node.name, "state": node.state})


def _rate_limit() -> None:
    """Unauthenticated endpoints: a token bucket per client address (429 ``rate_limited``)."""
    svc = services()
    if not svc.unauthenticated.allow(request.remote_addr or "?", svc.monotonic()):
        raise ApiError(429, "rate_limited", "too many requests from this address; slow down")


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
        raise bad_request("bad_field", "event_log_sha256 must be 64 hex digits")
    ch = attestation.challenge(services(), node, digest.lower() if digest else None)
    return jsonify(
        {
            "nonce": ch.nonce.hex(),
            "expires_at": _iso(ch.expires_at),
            "pcr_selection": ch.pcr_selection,
            "known_event_log_sha256": ch.known_event_log_sha256,
        }
    ), 201


@attestation_bp.post("/nodes/<node>/evidence")
def evidence(node: str) -> Response:
    path_text(node, "node")
    _rate_limit()
    svc = services()
    if request.mimetype != "application/cbor":
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/cbor")
    length = request.content_length
    if length is not None and length > svc.config.max_bundle:
        raise ApiError(413, "too_large", f"evidence larger than {svc.config.max_bundle} bytes")
    body = read_body(svc.config.max_bundle + 1)
    result = attestation.submit(svc, node, body)
    return jsonify(result.to_json())


# --- inventory ----------------------------------------------------------------------------


@inventory_bp.get("/nodes")
@require(*READ_INVENTORY)
def list_nodes() -> Response:
    state = request.args.get("state")
    wanted = None if state is None else inventory.parse_state(state)
    labels = label_query(request.args.getlist("label"))
    return jsonify({"nodes": inventory.list_nodes(services(), state=wanted, labels=labels)})


@inventory_bp.get("/nodes/<node>")
@require(*READ_INVENTORY)
def show_node(node: str) -> Response:
    path_text(node, "node")
    return jsonify(inventory.show_node(services(), node))


@inventory_bp.get("/nodes/<node>/attestations")
@require(*REVIEW)
def node_attestations(node: str) -> Response:
    path_text(node, "node")
    limit = _int_arg("limit", 50, 1, 1000)
    with services().store.read() as db:
        n = inventory.get_node(db, node)
        rows = repo.node_attestations(db, n.id, limit=limit)
        return jsonify(
            {"attestations": [inventory.attestation_json(r, n.name, full=False) for r in rows]}
        )


@inventory_bp.get("/attestations/<att_id>")
@require(*REVIEW)
def show_attestation(att_id: str) -> Response:
    with services().store.read() as db:
        row, node = _attestation(db, att_id)
        return jsonify(inventory.attestation_json(row, node.name, full=True))


@inventory_bp.get("/attestations/<att_id>/evidence")
@require(*REVIEW)
def attestation_evidence(att_id: str) -> Response:
    """The evidence reassembled from what is stored (quote, signature, PCRs, the log by digest)."""
    with services().store.read() as db:
        row, node = _attestation(db, att_id)
        log = repo.get_event_log(db, row.event_log_sha256) if row.event_log_sha256 else None
        ev = Evidence(
            node=node.name,
            agent_version=row.agent_version,
            nonce=row.nonce,
            attest=row.quote,
            signature=row.signature,
            pcrs=attestation.pcrs_from_json(row.pcrs),
            event_log_sha256=bytes.fromhex(row.event_log_sha256 or "00" * 32),
            event_log=log,
            ima_log=None,
        )
    return Response(encode_evidence(ev), mimetype="application/cbor")


def _attestation(db: Any, att_id: str) -> tuple[Attestation, Node]:
    if not att_id.isdigit() or len(att_id) > 18:
        raise not_found("attestation_unknown", f"no attestation {att_id!r}")
    row = db.get(Attestation, int(att_id))
    node = db.get(Node, row.node_id) if row is not None else None
    if row is None or node is None:
        raise not_found("attestation_unknown", f"no attestation {att_id!r}")
    return row, node


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    value = request.args.get(name)
    if value is None:
        return default
    if not value.isdigit() or not lo <= int(value) <= hi:
        raise bad_request("bad_query", f"{name} must be an integer {lo}..{hi}")
    return int(value)


# --- golden -------------------------------------------------------------------------------


@golden_bp.get("/golden")
@require(*REVIEW)
def list_golden() -> Response:
    return jsonify(golden_ops.list_sets(services()))


@golden_bp.get("/golden/<name>/<version>")
@require(*REVIEW)
def show_golden(name: str, version: str) -> Response:
    path_text(name, "golden set", 200), path_text(version, "golden version", 64)
    return jsonify(golden_ops.show(services(), name, version))


@golden_bp.post("/golden")
@require(*ADMIN)
def add_golden() -> tuple[Response, int]:
    fmt = {"application/cbor": "corim", "application/rim+cbor": "corim"}.get(
        request.mimetype, "yaml"
    )
    data = read_body(golden_ops.MAX_GOLDEN + 1)
    if not data:
        raise bad_request("bad_field", "send the golden set (YAML, or CoRIM as application/cbor)")
    return jsonify(golden_ops.upload(services(), fmt, data, actor())), 201


@golden_bp.post("/golden/assignments")
@require(*ADMIN)
def assign_golden() -> Response:
    body = json_body()
    name = text_field(body, "golden", max_len=200)
    return jsonify(golden_ops.assign(services(), name, labels_field(body, "selector"), actor()))


@golden_bp.post("/golden/<name>/<version>/<action>")
@require(*ADMIN)
def golden_status(name: str, version: str, action: str) -> Response:
    path_text(name, "golden set", 200), path_text(version, "golden version", 64)
    status = {"retire": "retired", "revoke": "revoked"}.get(action)
    if status is None:
        raise not_found("not_found", f"unknown golden action {action!r}")
    reason = reason_field(json_body())
    return jsonify(golden_ops.set_status(services(), name, version, status, reason, actor()))


# --- admin --------------------------------------------------------------------------------


@admin_bp.post("/nodes/<node>/<action>")
@require(*ADMIN)
def node_action(node: str, action: str) -> Response:
    path_text(node, "node")
    svc = services()
    body = json_body()
    reason = reason_field(body)
    if action == "move":
        new_name = node_field(body, "to")
        return jsonify(inventory.move_node(svc, node, new_name, reason, actor()))
    if action == "labels":
        return jsonify(inventory.set_labels(svc, node, labels_field(body), reason, actor()))
    if action == "quarantine":
        return jsonify(inventory.quarantine(svc, node, reason, actor()))
    if action == "release":
        return jsonify(inventory.release(svc, node, reason, actor()))
    if action == "replace":
        inventory.allow_replace(svc, node, reason, actor())
        return jsonify({"node": node, "replace_allowed": True})
    if action == "reappraise":
        return jsonify({"reappraised": inventory.reappraise_nodes(svc, [node], reason, actor())})
    raise not_found("not_found", f"unknown node action {action!r}")


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
    return jsonify({"reappraised": inventory.reappraise_nodes(services(), None, reason, actor())})


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
        raise bad_request("bad_field", f"ttl must be a number of seconds in 1..{MAX_TTL}")
    single_use = body.get("single_use", False)
    if not isinstance(single_use, bool):
        raise bad_request("bad_field", "single_use must be a boolean")
    desc = body.get("description", "")
    if not isinstance(desc, str):
        raise bad_request("bad_field", "description must be a string")
    out = tokens.create(
        services(),
        text_field(body, "role", max_len=16),
        ttl=ttl,
        single_use=single_use,
        description=printable(desc[:200], "description"),
        labels=labels_field(body),
        actor=actor(),
    )
    return jsonify(out), 201


@admin_bp.get("/tokens")
@require(*ADMIN)
def list_tokens() -> Response:
    return jsonify({"tokens": tokens.list_all(services())})


@admin_bp.post("/tokens/<token_id>/revoke")
@require(*ADMIN)
def revoke_token(token_id: str) -> Response:
    reason = reason_field(json_body())
    return jsonify(tokens.revoke(services(), token_id, reason, actor()))


@admin_bp.get("/audit")
@require(*REVIEW)
def audit_log() -> Response:
    limit = _int_arg("limit", 100, 1, 1000)
    target = request.args.get("target")
    if target is not None and (len(target) > 300 or not target.isprintable()):
        raise bad_request("bad_query", "target must be printable text of at most 300 characters")
    with services().store.read() as db:
        entries = repo.list_audit(db, target=target, limit=limit)
        return jsonify(
            {
                "audit": [
                    {
                        "id": e.id,
                        "at": _iso(e.at),
                        "actor": e.actor,
                        "action": e.action,
                        "target": e.target,
                        "reason": e.reason,
                        "details": e.details,
                    }
                    for e in entries
                ]
            }
        )
