"""The console's pages (GET): decode the query, call a domain function, render a template."""

from __future__ import annotations

import json

from flask import Response, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as WResponse

from assay.evidence import encode_evidence
from verifier.service import (
    attestation,
    audit,
    golden_ops,
    incidents,
    inventory,
    promotion,
    review,
    sessions,
)
from verifier.service._http import path_text, services
from verifier.service.errors import BadRequest, NotFound, Unauthenticated

from ._blueprint import bp
from ._session import COOKIE, PRE_COOKIE, csrf_token, current, next_target, session, signed_in

NO_CACHE_DOWNLOAD = {"Cache-Control": "no-store"}


bp.add_app_template_global(csrf_token, "csrf_token")
bp.add_app_template_global(current, "console_session")


@bp.get("/signin")
def signin() -> WResponse | str:
    try:
        if sessions.resume(services(), request.cookies.get(COOKIE)):
            return redirect(url_for("console.overview"), 303)
    except Unauthenticated:
        pass
    why = request.args.get("why", "")
    html = render_template("signin.html", why=why, next=next_target())
    resp = Response(html, mimetype="text/html")
    if not request.cookies.get(PRE_COOKIE):
        resp.set_cookie(
            PRE_COOKIE, csrf_token(), httponly=True, samesite="Strict",
            secure=request.is_secure, path="/ui",
        )  # fmt: skip
    return resp


@bp.get("/")
@signed_in
def overview() -> str:
    return render_template("overview.html", o=review.overview(services()))


@bp.get("/nodes")
@signed_in
def nodes() -> str:
    q = review.node_query(request.args.to_dict())
    return render_template("nodes.html", page=review.node_list(services(), q), q=q)


@bp.get("/nodes/<name>")
@signed_in
def node(name: str) -> str:
    path_text(name, "node")
    return render_template("node.html", d=review.node_detail(services(), name))


@bp.get("/attestations/<att_id>")
@signed_in
def attestation_page(att_id: str) -> str:
    page = review.attestation_page(services(), att_id)
    pcr = request.args.get("pcr", "")
    if pcr and (not pcr.isdigit() or int(pcr) > 23):
        raise BadRequest("bad_query", "pcr must be 0..23")
    shown = [e for e in page.events if not pcr or e.pcr == int(pcr)]
    return render_template(
        "attestation.html", p=page, a=page.detail.summary, events=shown, pcr=pcr,
        bank=services().config.bank,
    )  # fmt: skip


@bp.get("/attestations/<att_id>/evidence.cbor")
@signed_in
def download_evidence(att_id: str) -> Response:
    ev = attestation.stored_evidence(services(), att_id)
    return _download(encode_evidence(ev), "application/cbor", f"attestation-{att_id}.cbor")


@bp.get("/attestations/<att_id>/eventlog.bin")
@signed_in
def download_log(att_id: str) -> Response:
    ev = attestation.stored_evidence(services(), att_id)
    if ev.event_log is None:
        raise NotFound("event_log_missing", "no event log is stored for this attestation")
    return _download(ev.event_log, "application/octet-stream", f"eventlog-{att_id}.bin")


@bp.get("/attestations/<att_id>/verdict.json")
@signed_in
def download_verdict(att_id: str) -> Response:
    detail = inventory.attestation(services(), att_id)
    body = json.dumps(detail.to_json(), indent=2, sort_keys=False).encode()
    return _download(body, "application/json", f"verdict-{att_id}.json")


def _download(body: bytes, mimetype: str, filename: str) -> Response:
    resp = Response(body, mimetype=mimetype, headers=NO_CACHE_DOWNLOAD)
    resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return resp


@bp.get("/attestations/<att_id>/promote")
@signed_in
def promote_form(att_id: str) -> str:
    page = review.attestation_page(services(), att_id)
    found = promotion.candidates(services(), att_id)
    return render_template("promote.html", p=page, a=page.detail.summary, candidates=found)


@bp.get("/incidents")
@signed_in
def incident_list() -> str:
    state = request.args.get("state") or None
    wanted = incidents.parse_triage_state(state) if state else None
    found = incidents.list_incidents(services(), state=wanted)
    return render_template("incidents.html", incidents=found, state=state or "")


@bp.get("/incidents/<incident_id>")
@signed_in
def incident(incident_id: str) -> str:
    return render_template("incident.html", d=incidents.show(services(), incident_id))


@bp.get("/golden")
@signed_in
def golden() -> str:
    att = request.args.get("attestation", "").strip()
    accept = review.would_accept(services(), att) if att else None
    listing = golden_ops.list_sets(services())
    drafts = promotion.pending(services())
    return render_template(
        "golden.html", entries=review.golden_overview(services()), listing=listing,
        accept=accept, att=att, drafts=drafts,
    )  # fmt: skip


@bp.get("/golden/<name>/<version>")
@signed_in
def golden_version(name: str, version: str) -> str:
    path_text(name, "golden set", 200), path_text(version, "golden version", 64)
    return render_template("golden_version.html", g=golden_ops.show(services(), name, version))


@bp.get("/drafts")
@signed_in
def drafts() -> str:
    return render_template("drafts.html", drafts=promotion.list_drafts(services()))


@bp.get("/drafts/<draft_id>")
@signed_in
def draft(draft_id: str) -> str:
    d = promotion.show(services(), draft_id)
    return render_template("draft.html", d=d, me=session().caller.actor)


@bp.get("/audit")
@signed_in
def audit_log() -> str:
    target = request.args.get("target") or None
    if target is not None and (len(target) > 300 or not target.isprintable()):
        raise BadRequest("bad_query", "target must be printable text of at most 300 characters")
    entries = audit.entries(services(), target=target, limit=200)
    return render_template("audit.html", entries=entries, target=target or "")


@bp.get("/<path:rest>")
def unknown(rest: str) -> str:
    raise NotFound("not_found", "no such console page")
