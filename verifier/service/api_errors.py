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
from collections.abc import Callable
from typing import Any

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


ErrorAnswer = tuple[int, str, str, dict[str, str]]
"""(HTTP status, stable code, one-line message, extra headers)."""


def _domain(exc: ServiceError) -> ErrorAnswer:
    return status_of(exc), exc.code, exc.message, {}


def _http_only(exc: HttpError) -> ErrorAnswer:
    return exc.status, exc.code, exc.message, {}


def _malformed(exc: MalformedEvidence) -> ErrorAnswer:
    return 400, "malformed_evidence", str(exc), {}


def _failed(exc: VerificationFailed) -> ErrorAnswer:
    return 422, exc.code, str(exc), {}


def _config(exc: ConfigurationError) -> ErrorAnswer:
    log.error("configuration error: %s", exc)
    return 500, "configuration_error", str(exc), {}


def _store(exc: StoreUnavailable) -> ErrorAnswer:
    log.warning("%s", exc)
    code = "database_busy" if exc.busy else "database_unavailable"
    return 503, code, str(exc), {"Retry-After": "1"}


def _werkzeug(exc: HTTPException) -> ErrorAnswer:
    code = (exc.name or "error").lower().replace(" ", "_")
    headers = {}
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        headers["Allow"] = ", ".join(exc.valid_methods)  # RFC 9110: a 405 says what is
    return exc.code or 500, code, exc.description or exc.name or "error", headers


def _bug(exc: Exception) -> ErrorAnswer:
    log.exception("internal error")
    return 500, "internal_error", "internal error; see the verifier log", {}


MAPPING: dict[type[Exception], Callable[[Any], ErrorAnswer]] = {
    ServiceError: _domain,
    HttpError: _http_only,
    MalformedEvidence: _malformed,
    VerificationFailed: _failed,
    ConfigurationError: _config,
    StoreUnavailable: _store,
    HTTPException: _werkzeug,
    Exception: _bug,
}
"""Each exception class's answer. An exception takes the entry of the first class in its MRO
that has one, as Flask picks among the handlers registered below."""


def error_of(exc: Exception) -> ErrorAnswer:
    """The answer to ``exc`` (call it while handling ``exc``: a bug is logged with its trace)."""
    for kind in type(exc).__mro__:
        answer = MAPPING.get(kind)
        if answer is not None:
            return answer(exc)
    return _bug(exc)


def register_error_handlers(app: Flask) -> None:
    def handle(exc: Exception) -> tuple[Response, int]:
        status, code, message, headers = error_of(exc)
        resp, status = error_response(status, code, message)
        resp.headers.update(headers)
        return resp, status

    for kind in MAPPING:
        app.register_error_handler(kind, handle)
