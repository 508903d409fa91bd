"""``GET /metrics``: Prometheus text format via prometheus-client, multiprocess under gunicorn.

Counted as requests finish (``after_request``, so no domain module knows about metrics):
``assay_attestations_total{status,reason}`` (the verdicts new evidence got; reason is the stable
code), ``assay_nonce_refusals_total{reason}``, ``assay_http_requests_total`` and
``assay_http_request_duration_seconds{endpoint,method}``, ``assay_appraisal_duration_seconds``
(one evidence request from decoding to the stored verdict), ``assay_webhook_deliveries_total``.
Read from the database at scrape time, so they are the same whichever worker answers:
``assay_nodes{state}`` (stale computed), ``assay_webhook_queue_depth{receiver}``,
``assay_cluster_events_last_seq``.

Access: with ``metrics_bind`` the page is served unauthenticated on that separate address (and
this route answers 404); else with ``metrics_token`` it needs ``Authorization: Bearer <token>``;
with neither it is refused (403 ``metrics_not_configured``): nothing is exposed by default.
"""

from __future__ import annotations

import hmac
import os
import re
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from verifier.store import cluster, repo
from verifier.store.models import NodeState

from . import inventory
from ._answer import answer_json
from ._http import services
from .context import Services
from .errors import Forbidden, NotFound, Unauthenticated

metrics_bp = Blueprint("metrics", __name__)
_CODE = re.compile(r"([a-z][a-z0-9_]*)(:|$)")
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The service's metric objects, one set per process (kept in ``Services.extensions``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.attestations = Counter(
            "assay_attestations", "Verdicts of new evidence", ["status", "reason"], registry=r
        )
        self.nonce_refusals = Counter(
            "assay_nonce_refusals", "Evidence refused for its nonce", ["reason"], registry=r
        )
        self.requests = Counter(
            "assay_http_requests", "HTTP requests", ["endpoint", "method", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "assay_http_request_duration_seconds",
            "HTTP request duration",
            ["endpoint", "method"],
            buckets=BUCKETS,
            registry=r,
        )
        self.appraisal_seconds = Histogram(
            "assay_appraisal_duration_seconds",
            "One evidence request: decode, verify, appraise, store",
            buckets=BUCKETS,
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "assay_webhook_deliveries", "Webhook POSTs", ["receiver", "outcome"], registry=r
        )


def metrics_of(svc: Services) -> Metrics:
    found = svc.extensions.get("metrics")
    if not isinstance(found, Metrics):
        found = svc.extensions["metrics"] = Metrics()
    return found


def code_of(reason: str) -> str:
    match = _CODE.match(reason)
    return match.group(1) if match else "all_checks_passed"


class StoreCollector(Collector):
    """Gauges read from the database at scrape time: the same answer from every worker."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        svc = self.svc
        nodes = GaugeMetricFamily("assay_nodes", "Nodes by effective state", labels=["state"])
        depth = GaugeMetricFamily(
            "assay_webhook_queue_depth", "Events not yet delivered", labels=["receiver"]
        )
        now, window = svc.now(), svc.config.freshness_window
        with svc.store.read() as db:
            counts = Tally(
                inventory.effective_state(n, now, window)[0] for n in repo.list_nodes(db)
            )
            last = cluster.last_seq(db)
            cursors = {c.receiver: c.last_seq for c in cluster.all_cursors(db)}
        for state in NodeState:
            nodes.add_metric([str(state)], counts.get(state, 0))
        for receiver in svc.config.webhooks:
            depth.add_metric([receiver.name], max(0, last - cursors.get(receiver.name, last)))
        yield nodes
        yield depth
        seq = GaugeMetricFamily("assay_cluster_events_last_seq", "Newest change-feed event")
        seq.add_metric([], last)
        yield seq


def exposition(svc: Services) -> bytes:
    """The metrics page: every worker's counters (multiprocess) plus the store's gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = metrics_of(svc).registry
    out: bytes = generate_latest(registry)
    store = CollectorRegistry()
    store.register(StoreCollector(svc))
    return out + generate_latest(store)


@metrics_bp.get("/metrics")
def metrics_page() -> Response:
    svc = services()
    cfg = svc.config
    if cfg.metrics_bind:
        raise NotFound("not_found", f"metrics are served on {cfg.metrics_bind}")
    if not cfg.metrics_token:
        raise Forbidden("metrics_not_configured", "set metrics_token or metrics_bind")
    header = request.headers.get("Authorization", "")
    if not hmac.compare_digest(header.encode(), f"Bearer {cfg.metrics_token}".encode()):
        raise Unauthenticated("unauthenticated", "metrics need Authorization: Bearer <token>")
    return Response(exposition(svc), mimetype=CONTENT_TYPE_LATEST)


def _started() -> None:
    g.metrics_started = time.perf_counter()


def _finished(resp: Response) -> Response:
    started = g.get("metrics_started")
    if started is None or request.endpoint in (None, "metrics.metrics_page"):
        return resp
    count_request(
        services(), request.endpoint or "unknown", request.method, resp.status_code,
        time.perf_counter() - started, lambda: answer_json(resp),
    )  # fmt: skip
    return resp


def count_request(
    svc: Services, endpoint: str, method: str, status: int, took: float, body: Callable[[], Any]
) -> None:
    """Count one finished request (``body``: its JSON answer, read only for new evidence)."""
    m = metrics_of(svc)
    m.requests.labels(endpoint, method, str(status)).inc()
    m.request_seconds.labels(endpoint, method).observe(took)
    if endpoint == "attestation.evidence":
        _count_evidence(m, status, body(), took)


def _count_evidence(m: Metrics, status: int, body: Any, took: float) -> None:
    if not isinstance(body, dict):
        return
    if status == 200:
        m.appraisal_seconds.observe(took)
        m.attestations.labels(str(body.get("status")), code_of(str(body.get("reason", "")))).inc()
        return
    code = str((body.get("error") or {}).get("code", ""))
    if code.startswith("nonce_"):
        m.nonce_refusals.labels(code).inc()


def init_app(app: Flask) -> None:
    app.register_blueprint(metrics_bp)
    app.before_request(_started)
    app.after_request(_finished)


def serve_separately(svc: Services, bind: str) -> None:
    """Serve ``/metrics`` on its own ``HOST:PORT`` (a thread/greenlet of the calling process)."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    host, _, port = bind.rpartition(":")

    def app(environ: dict[str, Any], start: Any) -> list[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        start("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [exposition(svc)]

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = make_server(host or "127.0.0.1", int(port), app, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="assay-metrics", daemon=True).start()
