"""The Flask app factory: configuration in, app out; no module globals."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from flask import Flask, Response, jsonify

from verifier.store import Store

from . import health
from .api_errors import register_error_handlers
from .config import ServiceConfig
from .context import Services
from .routes import BLUEPRINTS


def create_app(
    config: ServiceConfig,
    *,
    store: Store | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> Flask:
    """Build the verifier app. The database must already be at the newest schema (db upgrade)."""
    app = Flask("verifier")
    app.config["MAX_CONTENT_LENGTH"] = config.max_bundle + 1024
    app.json.sort_keys = False  # type: ignore[attr-defined]
    store = store or Store(
        config.database,
        statement_timeout=config.statement_timeout,
        idle_timeout=config.idle_in_transaction_timeout,
    )
    svc = Services(config=config, store=store)
    if clock is not None:
        svc.clock = clock
    app.extensions["assay"] = svc
    register_error_handlers(app)
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)

    @app.get("/healthz")
    def healthz() -> Response:
        """Liveness: the process answers (it says nothing about the database)."""
        return jsonify({"ok": True})

    @app.get("/readyz")
    def readyz() -> Response:
        """Readiness: the database answers now; else 503 ``database_unavailable`` (or
        ``database_busy``) with Retry-After, from the one error mapping."""
        return jsonify(health.ready(svc).to_json())

    return app
