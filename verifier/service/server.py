"""Running the app under gunicorn: gevent workers, bind address, TLS when a certificate is given.

Workers are gevent (``_worker.VerifierWorker``): slow or idle clients cost a greenlet each, so they
cannot stall the service the way two idle sockets stalled two sync workers (docs/operations.md).
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from .app import create_app
from .config import ServiceConfig
from .context import Services

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
            "post_worker_init": _post_worker_init,
            "child_exit": _child_exit,
            "when_ready": _when_ready,
        }
        if cfg.tls_cert and cfg.tls_key:
            settings["certfile"] = cfg.tls_cert
            settings["keyfile"] = cfg.tls_key
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app(self.service_config)


def _post_worker_init(worker: Any) -> None:
    """Each worker delivers webhooks (a lease per receiver keeps one delivering at a time)."""
    from .webhooks import Dispatcher

    svc = worker.wsgi.extensions["assay"]
    if isinstance(svc, Services) and svc.config.webhooks:
        Dispatcher(svc).start()


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def _when_ready(server: Any) -> None:
    """In the master, once: the EAR signing key (made on the first start), and ``/metrics`` on
    its own address when ``metrics_bind`` is set."""
    from verifier.store import Store

    from . import ear_keys

    app: VerifierServer = server.app
    cfg = app.service_config
    svc = Services(config=cfg, store=Store(cfg.database))
    ear_keys.stored_keys(svc)
    if cfg.metrics_bind:
        from .metrics import serve_separately

        serve_separately(svc, cfg.metrics_bind)


def serve(config: ServiceConfig) -> None:
    VerifierServer(config).run()
