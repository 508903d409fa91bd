"""HTTP handlers for review work, the same operations the console offers (docs/api.md): incidents
and their triage, promotable events, and four-eyes golden drafts. Thin like ``routes``: decode,
call the domain function, encode.

Who: reviewer and admin read incidents and drafts, triage incidents, add notes, and approve or
reject a draft (never their own: ``promotion.approve``); only an admin drafts.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from . import incidents, promotion
from ._http import json_body, path_text, reason_field, services, text_field
from .auth import ADMIN, REVIEW, actor, current_caller, require
from .errors import BadRequest, NotFound

review_bp = Blueprint("review", __name__, url_prefix="/v1")


@review_bp.get("/incidents")
@require(*REVIEW)
def list_incidents() -> Response:
    state = request.args.get("state")
    wanted = incidents.parse_triage_state(state) if state else None
    found = incidents.list_incidents(services(), state=wanted)
    return jsonify({"incidents": [i.to_json() for i in found]})


@review_bp.get("/incidents/<incident_id>")
@require(*REVIEW)
def show_incident(incident_id: str) -> Response:
    return jsonify(incidents.show(services(), incident_id).to_json())


@review_bp.post("/incidents/<incident_id>/triage")
@require(*REVIEW)
def triage_incident(incident_id: str) -> Response:
    body = json_body()
    state = incidents.parse_triage_state(text_field(body, "state", max_len=16))
    assignee = text_field(body, "assignee", max_len=200) if "assignee" in body else None
    view = incidents.triage(services(), incident_id, state, assignee, reason_field(body), actor())
    return jsonify(view.to_json())


@review_bp.post("/incidents/<incident_id>/notes")
@require(*REVIEW)
def note_incident(incident_id: str) -> tuple[Response, int]:
    text = text_field(json_body(), "text", max_len=4000)
    return jsonify(incidents.add_note(services(), incident_id, text, actor()).to_json()), 201


@review_bp.get("/attestations/<att_id>/promotable")
@require(*REVIEW)
def promotable(att_id: str) -> Response:
    found = promotion.candidates(services(), att_id)
    return jsonify({"events": [c.to_json() for c in found]})


@review_bp.post("/drafts")
@require(*ADMIN)
def create_draft() -> tuple[Response, int]:
    body = json_body()
    events = body.get("events")
    if not isinstance(events, list) or not all(
        isinstance(e, int) and not isinstance(e, bool) and 0 <= e < 1_000_000 for e in events
    ):
        raise BadRequest("bad_field", "events must be a list of event indices")
    version = text_field(body, "version", required=False, max_len=64) or None
    made = promotion.draft(
        services(),
        text_field(body, "attestation_id", max_len=20),
        text_field(body, "golden", max_len=270),
        events,
        reason_field(body),
        current_caller(),
        version,
    )
    return jsonify(made.to_json()), 201


@review_bp.get("/drafts")
@require(*REVIEW)
def list_drafts() -> Response:
    state = request.args.get("state")
    wanted = promotion.parse_draft_state(state) if state else None
    found = promotion.list_drafts(services(), state=wanted)
    return jsonify({"drafts": [d.to_json() for d in found]})


@review_bp.get("/drafts/<draft_id>")
@require(*REVIEW)
def show_draft(draft_id: str) -> Response:
    return jsonify(promotion.show(services(), draft_id).to_json())


@review_bp.post("/drafts/<draft_id>/<decision>")
@require(*REVIEW)
def decide_draft(draft_id: str, decision: str) -> Response:
    path_text(draft_id, "draft", 20)
    reason = reason_field(json_body())
    if decision == "approve":
        return jsonify(promotion.approve(services(), draft_id, reason, current_caller()).to_json())
    if decision == "reject":
        return jsonify(promotion.reject(services(), draft_id, reason, current_caller()).to_json())
    raise NotFound("not_found", f"unknown decision {decision!r}")
