"""The API's one error mapping: every failure is ``{"error": {"code", "message"}}``, a 4xx (5xx
only for a bug, an unusable configuration or an unavailable database).

Domain errors map by type: BadRequest → 400, Unauthenticated → 401, Forbidden → 403,
NotFound → 404, Conflict → 409, Expired → 410; MalformedEvidence → 400 ``malformed_evidence``,
VerificationFailed → 422 (with its code), ConfigurationError → 500, StoreUnavailable → 503
(``database_busy`` or ``database_unavailable``, with Retry-After). ``HttpError`` is what only the
HTTP layer refuses (408 slow body, 413 too large, 415 media type, 429 rate limit); Werkzeug's own
errors (404 route, 405 method, 413 too large) get the same JSON shape.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from assay.errors import ConfigurationError, MalformedEvidence, VerificationFailed
from verifier.store import StoreUnavailable

from .errors import (
    BadRequest,
    Conflict,
    Expired,
    Forbidden,
    NotFound,
    ServiceError,
    Unauthenticated,
)

log = logging.getLogger("assay.verifier")

STATUS: tuple[tuple[type[ServiceError], int], ...] = (
    (BadRequest, 400),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Expired, 410),
    (ServiceError, 400),
)


class HttpError(Exception):
    """A refusal only the HTTP layer makes: its status, a stable code, a one-line message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def status_of(exc: ServiceError) -> int:
    return next(status for kind, status in STATUS if isinstance(exc, kind))


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def _domain(exc: ServiceError) -> tuple[Response, int]:
        return error_response(status_of(exc), exc.code, exc.message)

    @app.errorhandler(HttpError)
    def _http_only(exc: HttpError) -> tuple[Response, int]:
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(MalformedEvidence)
    def _malformed(exc: MalformedEvidence) -> tuple[Response, int]:
        return error_response(400, "malformed_evidence", str(exc))

    @app.errorhandler(VerificationFailed)
    def _failed(exc: VerificationFailed) -> tuple[Response, int]:
        return error_response(422, exc.code, str(exc))

    @app.errorhandler(ConfigurationError)
    def _config(exc: ConfigurationError) -> tuple[Response, int]:
        log.error("configuration error: %s", exc)
        return error_response(500, "configuration_error", str(exc))

    @app.errorhandler(StoreUnavailable)
    def _store(exc: StoreUnavailable) -> tuple[Response, int]:
        log.warning("%s", exc)
        code = "database_busy" if exc.busy else "database_unavailable"
        resp, status = error_response(503, code, str(exc))
        resp.headers["Retry-After"] = "1"
        return resp, status

    @app.errorhandler(HTTPException)
    def _werkzeug(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        resp, status = error_response(status, code, exc.description or exc.name or "error")
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            resp.headers["Allow"] = ", ".join(exc.valid_methods)  # RFC 9110: a 405 says what is
        return resp, status

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> tuple[Response, int]:
        log.exception("internal error")
        return error_response(500, "internal_error", "internal error; see the verifier log")
