"""Running the app under gunicorn: gevent workers, bind address, TLS when a certificate is given.

Workers are gevent (``_worker.VerifierWorker``): slow or idle clients cost a greenlet each, so they
cannot stall the service the way two idle sockets stalled two sync workers (docs/operations.md).
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from .app import create_app
from .background import Runner
from .config import ServiceConfig

KEEPALIVE = 5
"""Seconds an idle kept-alive connection stays open, and the most a request line and headers
may take to arrive (the gevent worker reads them under this timeout)."""


class VerifierServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with our settings; each worker builds its own app (and database engine)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.service_config = config
        super().__init__()

    def load_config(self) -> None:
        cfg = self.service_config
        settings: dict[str, Any] = {
            "bind": [cfg.bind],
            "workers": cfg.workers,
            "worker_class": "verifier.service._worker.VerifierWorker",
            "worker_connections": cfg.worker_connections,
            "keepalive": KEEPALIVE,
            "timeout": 60,
            "graceful_timeout": 10,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            "proc_name": "assay-verifier",
        }
        if cfg.tls_cert and cfg.tls_key:
            settings["certfile"] = cfg.tls_cert
            settings["keyfile"] = cfg.tls_key
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        """In each worker (after the fork): the app, and its background-job loop."""
        app = create_app(self.service_config)
        if self.service_config.background_jobs:
            Runner(app.extensions["assay"]).start()
        return app


def serve(config: ServiceConfig) -> None:
    VerifierServer(config).run()
