"""The controller's long-running loops (see ``controller`` for what each is for)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .controller import MAX_BACKOFF, Controller
from .kubeapi import KubeError
from .verifier_api import VerifierUnavailable

log = logging.getLogger("assay.k8s")
RENEW = 5.0
WATCH_TIMEOUT = 60
FEED_WAIT = 10


def _sleep(c: Controller, seconds: float) -> None:
    c.stop.wait(seconds)


def lead(c: Controller) -> None:
    """1. Hold (or wait for) the Lease; on winning it, queue every node."""
    was = False
    while not c.stop.is_set():
        now = c.elector.try_acquire_or_renew()
        if now and not was:
            log.info("leading as %s", c.cfg.identity)
            c.queue_all()
        if was and not now:
            log.warning("lost the lease")
        was = now
        _sleep(c, min(RENEW, c.cfg.lease_duration / 3))


def watch_nodes(c: Controller) -> None:
    """2. List, then watch Nodes; relist on any error (a 410 Gone included)."""
    backoff = 0.5
    while not c.stop.is_set():
        try:
            listed = c.kube.list_nodes()
            c.set_nodes(list(listed.get("items", [])))
            c.queue_all()
            rv = str(listed["metadata"]["resourceVersion"])
            while not c.stop.is_set():
                for event in c.kube.watch_nodes(rv, WATCH_TIMEOUT):
                    rv = _on_node_event(c, event) or rv
            backoff = 0.5
        except (KubeError, OSError, ValueError, KeyError) as exc:
            c.errors.labels("watch").inc()
            log.warning("node watch: %s; relisting in %.1f s", exc, backoff)
            _sleep(c, backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)


def _on_node_event(c: Controller, event: dict[str, Any]) -> str | None:
    node = event["object"]
    name = node["metadata"]["name"]
    kind = event["type"]
    if kind == "DELETED":
        c.drop_node(name)
    elif kind in ("ADDED", "MODIFIED"):
        c.set_node(node)
        if kind == "ADDED" or c.ours_differ(node):
            c.queue.put(name)
    rv = node["metadata"].get("resourceVersion")
    return str(rv) if rv else None


def follow_feed(c: Controller) -> None:
    """3. Long-poll the verifier's change feed; queue the Nodes of the nodes that changed."""
    seq, backoff = 0, 0.5
    while not c.stop.is_set():
        try:
            events, last = c.verifier.events(seq, FEED_WAIT)
        except (VerifierUnavailable, ValueError, KeyError) as exc:
            c.errors.labels("feed").inc()
            log.warning("change feed: %s; again in %.1f s", exc, backoff)
            _sleep(c, backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)
            continue
        backoff = 0.5
        for event in events:
            for key in ("node", "from"):
                if isinstance(event.get(key), str):
                    for name in c.k8s_names_for(event[key]):
                        c.queue.put(name)
        if last < seq:  # the feed was reset (a new database): look at everything
            c.queue_all()
        seq = last


def resync(c: Controller) -> None:
    """4. Every node, every ``resync`` seconds (the backstop for anything missed)."""
    while not c.stop.is_set():
        _sleep(c, c.cfg.resync)
        c.queue_all()


def work(c: Controller) -> None:
    """5. Reconcile from the queue."""
    while not c.stop.is_set():
        c.work_once(0.5)


def _forever(loop: Callable[[Controller], None], c: Controller) -> None:
    """Run a loop until the controller stops; a bug in one round is logged, never fatal."""
    while not c.stop.is_set():
        try:
            loop(c)
        except Exception:
            c.errors.labels("internal").inc()
            log.exception("%s", loop.__name__)
            _sleep(c, 1.0)


def start(c: Controller) -> list[threading.Thread]:
    loops = [lead, watch_nodes, follow_feed, resync] + [work] * c.cfg.workers
    threads = [
        threading.Thread(target=_forever, args=(f, c), name=f"assay-{f.__name__}", daemon=True)
        for f in loops
    ]
    for t in threads:
        t.start()
    return threads


def run_until_stopped(c: Controller) -> None:
    threads = start(c)
    try:
        while not c.stop.is_set():
            time.sleep(0.5)
    finally:
        c.stop.set()
        for t in threads:
            t.join(timeout=2)
