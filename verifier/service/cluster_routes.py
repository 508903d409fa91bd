"""HTTP handlers of the cluster integration: EAR, JWKS, the EAR discovery document, the change
feed. Decode → domain call → encode, like ``routes``; registered by ``app`` with one line.

Who may call what: a node's EAR — scheduler, reviewer, admin, or the node itself with an AK
proof (headers ``X-Assay-Nonce``, ``X-Assay-Quote``, ``X-Assay-Signature``; see ``ear``); the
JWKS and discovery document — anyone (public keys); the change feed — scheduler, reviewer, admin.
"""

from __future__ import annotations

import base64
import binascii
import time

from flask import Blueprint, Response, jsonify, request

from . import ear, ear_keys, events
from ._http import path_text, services
from .api_errors import HttpError
from .auth import READ_INVENTORY, require
from .errors import Unauthenticated
from .routes import _int_arg  # the one query-integer parser (bad_query on anything else)

cluster_bp = Blueprint("cluster", __name__)
EAR_MEDIA_TYPE = "application/eat+jwt"
MAX_WAIT = 30


def _ear_response(node: str, nonce: str | None) -> Response:
    issued = ear.issue(services(), node, nonce=ear.parse_rp_nonce(nonce))
    resp = Response(issued.token, mimetype=EAR_MEDIA_TYPE)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@require(*READ_INVENTORY)
def _ear_for_token(node: str, nonce: str | None) -> Response:
    return _ear_response(node, nonce)


def _b64_header(name: str, limit: int) -> bytes:
    value = request.headers.get(name, "")
    if not value or len(value) > limit:
        raise Unauthenticated("node_auth_failed", f"{name} is missing or too long")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Unauthenticated("node_auth_failed", f"{name} is not base64") from None


@cluster_bp.get("/v1/nodes/<node>/ear")
def node_ear(node: str) -> Response:
    """With a bearer token: its role decides. Without one: the node's own AK proof, or 401."""
    path_text(node, "node")
    rp_nonce = request.args.get("nonce")  # the relying party's, bound into the EAR
    if "Authorization" in request.headers or "X-Assay-Quote" not in request.headers:
        return _ear_for_token(node, rp_nonce)
    svc = services()
    if not svc.unauthenticated.allow(request.remote_addr or "?", svc.monotonic()):
        raise HttpError(429, "rate_limited", "too many requests from this address; slow down")
    nonce_hex = request.headers.get("X-Assay-Nonce", "")
    try:
        nonce = bytes.fromhex(nonce_hex) if len(nonce_hex) == 64 else b""
    except ValueError:
        nonce = b""
    if not nonce:
        raise Unauthenticated("node_auth_failed", "X-Assay-Nonce must be the 64-hex-digit nonce")
    attest = _b64_header("X-Assay-Quote", 4096)
    signature = _b64_header("X-Assay-Signature", 4096)
    ear.authenticate_node(services(), node, nonce, attest, signature)
    return _ear_response(node, rp_nonce)


@cluster_bp.get("/v1/keys")
def jwks() -> Response:
    resp = jsonify(ear_keys.published_jwks(services()))
    resp.mimetype = "application/jwk-set+json"
    resp.headers["Cache-Control"] = "max-age=60"
    return resp


@cluster_bp.get("/.well-known/veraison/verification")
def discovery() -> Response:
    """The EAR convention's discovery document: the current verification key and endpoints."""
    svc = services()
    ring = ear_keys.keyring(svc, fresh=True)
    return jsonify(
        {
            "ear-verification-key": ring.signing.public_jwk(),
            "ear-verification-keys": ear_keys.published_jwks(svc)["keys"],
            "media-types": [EAR_MEDIA_TYPE],
            "version": ear.build_id(),
            "service-state": "READY",
            "api-endpoints": {"ear": "/v1/nodes/{node}/ear", "jwks": "/v1/keys"},
        }
    )


@cluster_bp.get("/v1/events")
@require(*READ_INVENTORY)
def event_feed() -> Response:
    """The change feed: ``?after=SEQ&wait=S&limit=N`` (a long poll of up to 30 s)."""
    after = _int_arg("after", 0, 0, 2**62)
    wait = _int_arg("wait", 0, 0, MAX_WAIT)
    limit = _int_arg("limit", 500, 1, 1000)
    svc = services()
    page = events.feed(
        svc.store,
        after,
        wait=wait,
        limit=limit,
        monotonic=svc.monotonic,
        sleep=time.sleep,
        now=svc.now,
    )
    return jsonify(page.to_json())
