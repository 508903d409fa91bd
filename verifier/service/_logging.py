"""The verifier's log: one line per event, as text or as JSON (``log_format``), never a secret.

An event is a request that changed something or was refused: an attestation (node, attestation
id, status, reason) that is stored in full (an unchanged re-attestation is only counted, so it
is no line), an enrollment step, an admin action, every 4xx/5xx (its error code). Reads
that succeed are not events. Each line carries only fields taken from a fixed list, so what a
request or a response holds beyond them — bearer tokens, nonces, activation keys and secrets,
enrollment ids (the route's pattern is logged, never the path), keys, evidence, error messages
(which may quote a nonce) — cannot reach the log. ``tests/test_ops_logs.py`` runs an enrollment and
attestations with JSON logs on and looks for every secret it handled in every line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, g, request
from gunicorn import glogging

from ._answer import answer_json

EVENTS = logging.getLogger("assay.events")
FIELDS = ("node", "attestation_id", "status", "reason", "node_state", "state", "code")
"""What an event line may carry from a response, besides method, route and HTTP status."""
_CHANGES = ("POST", "PUT", "DELETE")
_NOT_EVENTS = ("attestation.challenge",)
"""A nonce handed out changes nothing: logged only when refused."""
_EVIDENCE = "attestation.evidence"


def _counted_repeat(answer: Any) -> bool:
    """An unchanged re-attestation (``repeat`` > 0): counted on its full record, not an event
    (the node's state, verdict and boot stay as the full record's line said; a line each would
    grow the journal by ~200 bytes per node per interval, unbounded, where the store keeps a
    count)."""
    repeat = answer.get("repeat") if isinstance(answer, dict) else None
    return type(repeat) is int and repeat > 0


_HANDLER_NAME = "assay-verifier"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, the record's fields, the message."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", "log"),
        }
        line.update(getattr(record, "fields", {}))
        message = record.getMessage()
        if message:
            line["message"] = message
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """``LEVEL event key=value … message``: the same fields as JSON, for a terminal or journal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        pairs = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        head = f"{record.levelname.lower()} {getattr(record, 'event', record.name)}"
        text = " ".join(x for x in (head, pairs, record.getMessage()) if x)
        if record.exc_info:
            text += " | " + " ".join(self.formatException(record.exc_info).split())
        return text


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(log_format: str) -> None:
    """Send the ``assay`` loggers to stderr in ``log_format`` (idempotent: one handler)."""
    root = logging.getLogger("assay")
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def gunicorn_logconfig(log_format: str) -> dict[str, Any]:
    """gunicorn's own error log in the same format (``logconfig_dict``)."""
    cls = "JsonFormatter" if log_format == "json" else "TextFormatter"
    stream = {"class": "logging.StreamHandler", "formatter": "assay", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"assay": {"()": f"verifier.service._logging.{cls}"}},
        "handlers": {"console": stream, "error_console": stream},
        "root": {"level": "WARNING", "handlers": ["console"]},
        "loggers": {
            name: {"level": "WARNING", "handlers": ["error_console"], "propagate": False}
            for name in ("gunicorn.error", "gunicorn.access")
        },
    }


class GunicornLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger without its access log (``accesslog`` is off: the verifier logs its own
    events). gunicorn counts any ``logconfig_dict`` as an access log, so it would build every
    request's atoms and then drop them at ``gunicorn.access``'s WARNING level: about 3% of a
    re-attestation's CPU under load (py-spy, 2026-12-03)."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


def _fields(body: Any, view_args: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"node": view_args.get("node")}
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            out["code"] = error.get("code")
        for key in FIELDS:
            value = body.get(key)
            if key != "code" and isinstance(value, str | int) and not isinstance(value, bool):
                out[key] = value
    return {k: v for k, v in out.items() if v is not None}


def _reappraised(body: Any) -> list[dict[str, Any]]:
    rows = body.get("reappraised") if isinstance(body, dict) else None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _log_event(resp: Response) -> Response:
    rule = request.url_rule.rule if request.url_rule is not None else "(no route)"
    caller = g.get("caller")
    log_request(
        request.method, request.endpoint, rule, resp.status_code,
        None if caller is None else caller.actor, request.view_args or {},
        lambda: answer_json(resp),
    )  # fmt: skip
    return resp


def log_request(
    method: str,
    endpoint: str | None,
    rule: str,
    status: int,
    actor: Any,
    view_args: Mapping[str, Any],
    body: Callable[[], Any],
) -> None:
    """The event line of one finished request, if it is an event (``body``: its JSON answer,
    read only then; ``actor``: the token's id and role, never its secret)."""
    quiet = method not in _CHANGES or endpoint in _NOT_EVENTS
    if (quiet and status < 400) or not EVENTS.isEnabledFor(logging.INFO):
        return
    base = {"method": method, "route": rule, "http_status": status}
    if actor is not None:
        base["actor"] = actor
    answer = body()
    if status == 200 and endpoint == _EVIDENCE and _counted_repeat(answer):
        return
    fields = {**base, **_fields(answer, view_args)}
    level = logging.WARNING if status >= 500 else logging.INFO
    EVENTS.log(level, "", extra={"event": endpoint or "request", "fields": fields})
    for row in _reappraised(answer):
        picked = {k: row[k] for k in FIELDS if isinstance(row.get(k), str | int)}
        EVENTS.info("", extra={"event": "reappraisal", "fields": {"route": rule, **picked}})


def init_app(app: Flask) -> None:
    """Log every event of ``app`` (the handlers are not touched: this reads the response)."""
    app.after_request(_log_event)
