"""``POST /v1/nodes/{node}/evidence`` as a WSGI app in front of Flask: the route every node calls
on every interval, without Flask's request cycle.

Flask's contexts, routing, hooks and response objects cost about a tenth of an unchanged
re-attestation's CPU. This path runs what the Flask route and its hooks run, from the same
functions: ``routes.evidence_answer`` (the checks in order, then ``submit``), the one error
mapping (``api_errors.error_of``), the request metrics (``metrics.count_request``) and the event
log (``_logging.log_request``); the body is read as Werkzeug's request stream reads it, and the
answer is encoded as the app's JSON provider encodes it (``_answer_json``: a repeated verdict's
checks list is encoded once), so the bytes on the wire are Flask's.

Only a request Flask would route to that view with the same ``node`` is taken — method POST and
a path of exactly ``/v1/nodes/<one segment>/evidence``; everything else, including every odd
spelling of that path, goes to Flask unchanged. ``tests/test_evidence_wsgi.py`` holds the two
paths to the same status, headers and body for good and hostile requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.http import parse_options_header
from werkzeug.wsgi import get_content_length, get_input_stream

from . import _logging, metrics
from ._answer_json import answer_response
from ._http import read_stream
from .api_errors import error_of, log
from .context import Services
from .routes import evidence_answer

ENDPOINT = "attestation.evidence"
RULE = "/v1/nodes/<node>/evidence"
_PREFIX, _SUFFIX = "/v1/nodes/", "/evidence"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def node_of(environ: dict[str, Any]) -> str | None:
    """The ``node`` Flask's router would pass the evidence view, or None when this is not
    plainly that route (then Flask decides)."""
    if environ.get("REQUEST_METHOD") != "POST":
        return None
    path = environ.get("PATH_INFO") or ""
    if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
        return None
    raw = path[len(_PREFIX) : -len(_SUFFIX)]
    if not raw or "/" in raw:
        return None
    try:
        return raw.encode("latin-1").decode("utf-8", "replace")  # as Werkzeug decodes PATH_INFO
    except UnicodeEncodeError:  # not a WSGI string (PEP 3333): Flask decides
        return None


class EvidenceRoute:
    """The WSGI app: the evidence route here, every other request to ``flask_app``."""

    def __init__(self, app: Flask, svc: Services, flask_app: WsgiApp) -> None:
        self.app = app
        self.svc = svc
        self.flask_app = flask_app
        self.max_content_length = app.config["MAX_CONTENT_LENGTH"]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        node = node_of(environ)
        if node is None:
            return self.flask_app(environ, start_response)
        started = time.perf_counter()
        body, status, headers = self._answer(environ, node)
        resp = answer_response(self.app, body)  # what jsonify makes, to the byte
        resp.status_code = status
        resp.headers.update(headers)
        try:
            took = time.perf_counter() - started
            metrics.count_request(self.svc, ENDPOINT, "POST", status, took, lambda: body)
            _logging.log_request("POST", ENDPOINT, RULE, status, None, {"node": node}, lambda: body)
        except Exception:  # the answer stands (the attestation is stored); the operator is told
            log.exception("counting or logging an evidence answer failed")
        out: Iterable[bytes] = resp(environ, start_response)
        return out

    def _answer(
        self, environ: dict[str, Any], node: str
    ) -> tuple[dict[str, Any], int, dict[str, str]]:
        svc = self.svc
        try:
            answer = evidence_answer(
                svc, node, environ.get("REMOTE_ADDR"),
                lambda: parse_options_header(environ.get("CONTENT_TYPE", ""))[0].lower(),
                get_content_length(environ),
                lambda: read_stream(
                    get_input_stream(environ, max_content_length=self.max_content_length),
                    svc.config.max_bundle + 1, svc.config.body_timeout,
                ),
            )  # fmt: skip
        except Exception as exc:
            status, code, message, headers = error_of(exc)
            return {"error": {"code": code, "message": message}}, status, headers
        return answer, 200, {}
