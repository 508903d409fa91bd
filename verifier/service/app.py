"""The Flask app factory: configuration in, app out; no module globals."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from flask import Flask, Response, jsonify

from verifier import web
from verifier.store import Store

from . import _logging, health, metrics
from ._evidence_wsgi import EvidenceRoute
from .api_errors import register_error_handlers
from .cluster_routes import cluster_bp
from .config import ServiceConfig
from .context import Services
from .extender_routes import extender_bp
from .openapi import openapi_bp
from .review_routes import review_bp
from .routes import BLUEPRINTS
from .runtime_routes import runtime_bp


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
    _logging.init_app(app)
    for bp in (*BLUEPRINTS, openapi_bp):
        app.register_blueprint(bp)
    app.register_blueprint(cluster_bp)  # EAR, JWKS, change feed
    app.register_blueprint(extender_bp)  # kube-scheduler extender
    metrics.init_app(app)  # /metrics and request counting
    app.register_blueprint(review_bp)  # incidents and four-eyes golden drafts (review_routes)
    app.register_blueprint(runtime_bp)  # runtime (IMA) policies (runtime_routes)
    web.init_app(app)  # the review console at /ui/ (verifier.web)
    # The evidence POST, in front of Flask's request cycle (_evidence_wsgi).
    app.wsgi_app = EvidenceRoute(app, svc, app.wsgi_app)  # type: ignore[method-assign]

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
