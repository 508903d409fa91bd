"""API errors: every failure is ``{"error": {"code", "message"}}`` with a 4xx (5xx only for bugs).

Domain errors map by type: MalformedEvidence → 400, VerificationFailed → 422 (with its code),
ConfigurationError → 500, StoreUnavailable → 503 (``database_busy`` or
``database_unavailable``, with Retry-After). Werkzeug's own errors (404 route, 405 method,
413 too large) become the same JSON shape.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from assay.errors import (
    AssayError,
    ConfigurationError,
    MalformedEvidence,
    VerificationFailed,
)
from verifier.store import StoreUnavailable

log = logging.getLogger("assay.verifier")


class ApiError(AssayError):
    """An error the API reports as-is: HTTP status, stable code, one-line message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad_request(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def not_found(code: str, message: str) -> ApiError:
    return ApiError(404, code, message)


def conflict(code: str, message: str) -> ApiError:
    return ApiError(409, code, message)


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> tuple[Response, int]:
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
    def _http(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(status, code, exc.description or exc.name or "error")

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> tuple[Response, int]:
        log.exception("internal error")
        return error_response(500, "internal_error", "internal error; see the verifier log")
