"""Running the app under gunicorn: gevent workers, bind address, TLS when a certificate is given.

Workers are gevent (``_worker.VerifierWorker``): slow or idle clients cost a greenlet each, so they
cannot stall the service the way two idle sockets stalled two sync workers (docs/operations.md).
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from . import _logging
from .app import create_app
from .background import Runner
from .config import ServiceConfig
from .context import Services

KEEPALIVE = 5
"""Seconds an idle kept-alive connection stays open, and the most a request line and headers
may take to arrive (the gevent worker reads them under this timeout)."""


class VerifierServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with our settings; each worker builds its own app (and database engine)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.service_config = config
        self.master_services: Services | None = None
        """The master's own services (the separate metrics bind), if any."""
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
            "logconfig_dict": _logging.gunicorn_logconfig(cfg.log_format),
            "logger_class": "verifier.service._logging.GunicornLogger",
            "post_fork": _post_fork,
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
        """In each worker (after the fork): the app, and its background-job loop."""
        _logging.configure(self.service_config.log_format)
        app = create_app(self.service_config)
        if self.service_config.background_jobs:
            Runner(app.extensions["assay"]).start()
        return app


def _post_worker_init(worker: Any) -> None:
    """Each worker delivers webhooks (a lease per receiver keeps one delivering at a time),
    leaves what it loaded to start out of the cyclic garbage collector's full passes, and keeps
    its collections short from then on (``_gcpolicy``)."""
    from . import _gcpolicy
    from .webhooks import Dispatcher

    _gcpolicy.start()  # its first pass, now, freezes what the worker loaded to start

    svc = worker.wsgi.extensions["assay"]
    if isinstance(svc, Services) and svc.config.webhooks:
        Dispatcher(svc).start()


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def _when_ready(server: Any) -> None:
    """In the master: ``/metrics`` on its own address when ``metrics_bind`` is set."""
    from verifier.store import Store

    from .metrics import serve_separately

    app: VerifierServer = server.app
    cfg = app.service_config
    if cfg.metrics_bind:
        app.master_services = Services(config=cfg, store=Store(cfg.database))
        serve_separately(app.master_services, cfg.metrics_bind)


def _post_fork(server: Any, worker: Any) -> None:
    """In a new worker: forget the master's database connections without closing them (they are
    the master's; closing a SQLite file's descriptor here would drop this process's locks)."""
    svc = getattr(server.app, "master_services", None)
    if isinstance(svc, Services):
        svc.store.engine.dispose(close=False)


def make_signing_key(config: ServiceConfig) -> None:
    """The EAR signing key, made on the first start (before the port opens, once)."""
    from verifier.store import Store

    from . import ear_keys

    svc = Services(config=config, store=Store(config.database))
    try:
        ear_keys.stored_keys(svc)
    finally:
        svc.store.close()


def serve(config: ServiceConfig) -> None:
    make_signing_key(config)
    VerifierServer(config).run()
