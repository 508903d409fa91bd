"""Webhook delivery from the change feed (``events``): at least once, in order, signed.

The feed is the outbox: an event exists only if the change that made it committed. Each
receiver has a cursor (``webhook_cursors``): the last event it acknowledged with a 2xx. A
dispatcher runs in every worker of every instance; whichever takes a receiver's short lease
(an atomic UPDATE) delivers the events after the cursor one by one, moving the cursor after each
2xx. A failure (any other status, a timeout, a refused connection) keeps the cursor, counts the
attempt and waits ``backoff(attempts)`` before the next. A crash — even ``kill -9`` between the
POST and the cursor update — loses nothing: the lease expires and the event is sent again with
the same ``X-Assay-Event-Id`` (the idempotency key), so receivers de-duplicate on it.

Each POST carries ``X-Assay-Timestamp`` (Unix seconds) and ``X-Assay-Signature: sha256=<hex>``,
the HMAC-SHA256 under the receiver's secret of ``"<timestamp>." + body``; receivers should
refuse a timestamp more than a few minutes old.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import requests

from verifier.store import cluster

from .config import WebhookReceiver
from .context import Services

log = logging.getLogger("assay.webhooks")
BATCH = 50
IDLE = 0.5
"""Seconds between looks for new events when every receiver is up to date."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def body_of(event: dict[str, Any]) -> bytes:
    """The event as sent: the same bytes on every attempt."""
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode()


def backoff(attempts: int, cap: float) -> float:
    """1 s, 2 s, 4 s … up to ``cap``, with ±20 % jitter so receivers are not hit in step."""
    base = min(cap, 2.0 ** max(0, attempts - 1))
    return float(base * random.uniform(0.8, 1.2))


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    error: str


class Dispatcher:
    """Delivers the feed to every configured receiver; one per worker, leases keep it single."""

    def __init__(self, svc: Services, session: requests.Session | None = None) -> None:
        self.svc = svc
        self.holder = uuid.uuid4().hex
        self.http = session or requests.Session()
        self._stop = threading.Event()

    def post(self, receiver: WebhookReceiver, event: dict[str, Any]) -> Outcome:
        body = body_of(event)
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "assay-verifier-webhooks",
            "X-Assay-Event-Id": str(event["id"]),
            "Idempotency-Key": str(event["id"]),
            "X-Assay-Event-Type": str(event["type"]),
            "X-Assay-Timestamp": str(stamp),
            "X-Assay-Signature": sign(receiver.key(), stamp, body),
        }
        try:
            resp = self.http.post(
                receiver.url,
                data=body,
                headers=headers,
                timeout=self.svc.config.webhook_timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return Outcome(False, f"{type(exc).__name__}: {str(exc)[:200]}")
        if 200 <= resp.status_code < 300:
            return Outcome(True, "")
        return Outcome(False, f"HTTP {resp.status_code}")

    def lease(self) -> float:
        """Seconds a receiver's delivery lease lasts unrenewed: the configured ``lease_ttl`` (how
        soon another worker resumes after one died mid-delivery), but never less than twice one
        POST's ``webhook_timeout``, so a slow receiver cannot let a second worker deliver beside
        the first."""
        cfg = self.svc.config
        return max(cfg.lease_ttl, 2 * cfg.webhook_timeout)

    def _has_work(self, name: str) -> bool:
        """A read-only look first, so idle dispatchers never take the database's write lock."""
        now = self.svc.now()
        with self.svc.store.read() as db:
            row = db.get(cluster.WebhookCursor, name)
            if row is None:
                return True  # the cursor is still to be made
            if row.next_attempt_at is not None and row.next_attempt_at > now:
                return False
            if row.locked_until is not None and row.locked_until > now:
                return False
            return cluster.last_seq(db) > row.last_seq

    def _claim(self, name: str, now: dt.datetime) -> int | None:
        """Take the receiver's lease; its cursor, or None if another holds it or it must wait."""
        with self.svc.store.write() as db:
            row = cluster.cursor(db, name)
            if row.next_attempt_at is not None and row.next_attempt_at > now:
                return None
            if not cluster.claim_cursor(db, name, self.holder, now, self.lease()):
                return None
            return row.last_seq

    def _settle(self, name: str, seq: int | None, outcome: Outcome, *, release: bool) -> None:
        now = self.svc.now()
        with self.svc.store.write() as db:
            row = db.get(cluster.WebhookCursor, name)
            if row is None or row.locked_by != self.holder:
                return  # the lease expired and someone else took it: leave their state alone
            if outcome.ok and seq is not None:
                row.last_seq, row.attempts, row.last_error = seq, 0, ""
                row.delivered += 1
                row.next_attempt_at = None
            elif not outcome.ok:
                row.attempts += 1
                row.last_error = outcome.error
                wait = backoff(row.attempts, self.svc.config.webhook_max_backoff)
                row.next_attempt_at = now + dt.timedelta(seconds=wait)
            row.locked_until = None if release else now + dt.timedelta(seconds=self.lease())
            if release:
                row.locked_by = None

    def deliver(self, receiver: WebhookReceiver) -> int:
        """Deliver what is pending for one receiver, in order, until a failure; how many went."""
        from .metrics import metrics_of

        if not self._has_work(receiver.name):
            return 0
        after = self._claim(receiver.name, self.svc.now())
        if after is None:
            return 0
        with self.svc.store.read() as db:
            rows = cluster.events_after(db, after, limit=BATCH, now=self.svc.now())
            pending = [{**e.payload, "seq": e.seq} for e in rows]
        sent = 0
        counter = metrics_of(self.svc).webhook_deliveries
        for event in pending:
            outcome = self.post(receiver, event)
            counter.labels(receiver.name, "delivered" if outcome.ok else "failed").inc()
            if not outcome.ok:
                log.warning("webhook %s: event %s: %s", receiver.name, event["id"], outcome.error)
                self._settle(receiver.name, None, outcome, release=True)
                return sent
            sent += 1
            self._settle(receiver.name, int(event["seq"]), outcome, release=False)
        self._settle(receiver.name, None, Outcome(True, ""), release=True)
        return sent

    def run_once(self) -> int:
        return sum(self.deliver(r) for r in self.svc.config.webhooks)

    def prune(self) -> int:
        """Drop events past ``event_retention`` that every receiver has."""
        now = self.svc.now()
        names = [r.name for r in self.svc.config.webhooks]
        with self.svc.store.write() as db:
            done = min(
                (c.last_seq for c in cluster.cursors(db, names)), default=cluster.last_seq(db)
            )
            before = now - dt.timedelta(seconds=self.svc.config.event_retention)
            return cluster.prune_events(db, before, done)

    def run_forever(self) -> None:
        last_prune = 0.0
        while not self._stop.is_set():
            try:
                busy = self.run_once()
                if time.monotonic() - last_prune > 600:
                    self.prune()
                    last_prune = time.monotonic()
            except Exception:  # a database hiccup must not end delivery: log, wait, go on
                log.exception("webhook dispatcher")
                busy = 0
            self._stop.wait(0 if busy else IDLE)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="assay-webhooks", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
