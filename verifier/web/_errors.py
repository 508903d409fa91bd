"""The console's one error mapping: every refusal is a page with the status the API would give
(``api_errors.status_of``), its stable code and a one-line message; a missing session on a page
is a redirect to the sign-in page. Never a stack trace, never node data unescaped."""

from __future__ import annotations

import logging

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from assay.errors import MalformedEvidence, VerificationFailed
from verifier.service.api_errors import status_of
from verifier.service.errors import ServiceError, Unauthenticated
from verifier.store import StoreUnavailable

from ._session import CsrfRefused

log = logging.getLogger("assay.console")


def page(status: int, code: str, message: str) -> tuple[str, int]:
    return render_template("error.html", status=status, code=code, message=message), status


def register_page_errors(bp: Blueprint) -> None:
    @bp.errorhandler(Unauthenticated)
    def _signed_out(exc: Unauthenticated) -> Response | tuple[str, int]:
        if request.method == "GET" and request.endpoint != "console.signin":
            target = url_for("console.signin", why=exc.code, next=request.full_path.rstrip("?"))
            return redirect(target, 303)
        return page(401, exc.code, exc.message)

    @bp.errorhandler(ServiceError)
    def _domain(exc: ServiceError) -> tuple[str, int]:
        return page(status_of(exc), exc.code, exc.message)

    @bp.errorhandler(CsrfRefused)
    def _csrf(exc: CsrfRefused) -> tuple[str, int]:
        return page(
            403, "csrf_failed", "the form's CSRF token is missing or wrong; reload the page"
        )

    @bp.errorhandler(MalformedEvidence)
    def _malformed(exc: MalformedEvidence) -> tuple[str, int]:
        return page(400, "malformed_evidence", str(exc))

    @bp.errorhandler(VerificationFailed)
    def _failed(exc: VerificationFailed) -> tuple[str, int]:
        return page(422, exc.code, str(exc))

    @bp.errorhandler(StoreUnavailable)
    def _store(exc: StoreUnavailable) -> tuple[str, int]:
        code = "database_busy" if exc.busy else "database_unavailable"
        return page(503, code, "the database is busy or unavailable; try again in a moment")

    @bp.errorhandler(HTTPException)
    def _werkzeug(exc: HTTPException) -> tuple[str, int]:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        return page(status, code, exc.description or exc.name or "error")

    @bp.errorhandler(Exception)
    def _bug(exc: Exception) -> tuple[str, int]:
        log.exception("console: internal error")
        return page(500, "internal_error", "internal error; see the verifier log")
