"""The console's actions (POST): every one signed in, CSRF-checked, with a mandatory reason,
done by a domain function that writes the audit log, then a redirect to the page it changed."""

from __future__ import annotations

import secrets

from flask import redirect, request, url_for
from werkzeug.wrappers import Response

from verifier.service import incidents, inventory, promotion, sessions
from verifier.service._http import path_text, services
from verifier.service.errors import NotFound

from . import forms
from ._blueprint import bp
from ._session import (
    COOKIE,
    PRE_COOKIE,
    admin_only,
    check_pre_csrf,
    next_target,
    session,
    signed_in,
)


@bp.post("/signin")
def signin_post() -> Response:
    check_pre_csrf()
    token = request.form.get("token", "")
    if len(token) > 300:
        token = ""
    opened = sessions.sign_in(services(), token)
    resp = redirect(next_target(), 303)
    lifetime = int((opened.session.expires_at - services().now()).total_seconds())
    resp.set_cookie(
        COOKIE, opened.secret, max_age=max(1, lifetime), httponly=True, samesite="Strict",
        secure=request.is_secure, path="/ui",
    )  # fmt: skip
    resp.set_cookie(
        PRE_COOKIE, secrets.token_urlsafe(24), httponly=True, samesite="Strict",
        secure=request.is_secure, path="/ui",
    )  # fmt: skip
    return resp


@bp.post("/signout")
@signed_in
def signout() -> Response:
    sessions.sign_out(services(), request.cookies.get(COOKIE))
    resp = redirect(url_for("console.signin", why="signed_out_now"), 303)
    resp.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="Strict")
    return resp


@bp.post("/nodes/<name>/<action>")
@signed_in
@admin_only
def node_action(name: str, action: str) -> Response:
    path_text(name, "node")
    svc, actor, why = services(), session().actor, forms.reason()
    if action == "quarantine":
        inventory.quarantine(svc, name, why, actor)
    elif action == "release":
        inventory.release(svc, name, why, actor)
    elif action == "reappraise":
        inventory.reappraise_nodes(svc, [name], why, actor)
    else:
        raise NotFound("not_found", f"unknown node action {action!r}")
    return redirect(url_for("console.node", name=name), 303)


@bp.post("/incidents/<incident_id>/triage")
@signed_in
def incident_triage(incident_id: str) -> Response:
    state = incidents.parse_triage_state(forms.text("state", max_len=16, required=True))
    assignee = forms.text("assignee") if "assignee" in request.form else None
    incidents.triage(services(), incident_id, state, assignee, forms.reason(), session().actor)
    return redirect(url_for("console.incident", incident_id=incident_id), 303)


@bp.post("/incidents/<incident_id>/notes")
@signed_in
def incident_note(incident_id: str) -> Response:
    incidents.add_note(services(), incident_id, forms.note(), session().actor)
    return redirect(url_for("console.incident", incident_id=incident_id), 303)


@bp.post("/attestations/<att_id>/promote")
@signed_in
@admin_only
def promote(att_id: str) -> Response:
    golden = forms.text("golden", max_len=270, required=True)
    version = forms.text("version", max_len=64) or None
    d = promotion.draft(
        services(), att_id, golden, forms.events(), forms.reason(), session().caller, version
    )
    return redirect(url_for("console.draft", draft_id=d.id), 303)


@bp.post("/drafts/<draft_id>/<decision>")
@signed_in
def decide(draft_id: str, decision: str) -> Response:
    svc, caller, why = services(), session().caller, forms.reason()
    if decision == "approve":
        promotion.approve(svc, draft_id, why, caller)
    elif decision == "reject":
        promotion.reject(svc, draft_id, why, caller)
    else:
        raise NotFound("not_found", f"unknown decision {decision!r}")
    return redirect(url_for("console.draft", draft_id=draft_id), 303)
