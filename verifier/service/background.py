"""Background jobs: each runs in whichever worker of whichever instance holds its lease.

Jobs (``JOBS``): the stale sweep with the purge of expired used nonces (every
``sweep_interval``), retention of attestations and the blob GC (every ``retention_interval``), and unfinished re-appraisal jobs (a
golden retire or revoke whose instance died). Each job runs batch by batch, one transaction per
batch that also renews the lease and saves the cursor (``verifier.store.leases``): it never runs
twice at once, resumes from its cursor in another instance after a kill, and holds its lease
until it is next due (the lease row is the schedule all instances share).

``Runner`` is one daemon thread per served worker (a greenlet under gevent's monkey-patching);
a database outage only makes a tick fail, logged, and the next tick tries again.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from assay.errors import AssayError
from verifier.store import leases, maintenance

from . import reappraisal
from .config import ServiceConfig
from .context import Services
from .inventory import sweep_batch

log = logging.getLogger("assay.verifier.jobs")
TICK = 2.0
MAX_BATCHES = 10_000
"""A safety bound on batches per run (each batch renews the lease)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One batch's work: how much it changed, and the cursor to resume from (None: done)."""

    changed: int
    cursor: str | None


StepFn = Callable[[Services, Session, str, dt.datetime], Step]


def _sweep(svc: Services, db: Session, cursor: str, now: dt.datetime) -> Step:
    """Expired used nonces first (cursor ``""``/``nonces``: a batch at a time, so the table holds
    about rate x lifetime rows), then the stale sweep from node id ``cursor``."""
    if cursor in ("", "nonces"):
        purged = maintenance.purge_nonces(db, now)
        return Step(purged, "nonces" if purged >= maintenance.NONCE_BATCH else "0")
    names, after = sweep_batch(svc, db, int(cursor), now, "sweep")
    return Step(len(names), None if after is None else str(after))


def _retention(svc: Services, db: Session, cursor: str, now: dt.datetime) -> Step:
    cfg = svc.config
    purged = 0
    policy = maintenance.Retention(
        dt.timedelta(days=cfg.retain_success_days), dt.timedelta(days=cfg.retain_failure_days)
    )
    batch = maintenance.retention_batch(db, policy, now, int(cursor or 0))
    return Step(purged + batch.deleted, None if batch.cursor is None else str(batch.cursor))


def _blob_gc(svc: Services, db: Session, cursor: str, now: dt.datetime) -> Step:
    """Event logs first (cursor ``logs:<digest>``), then verdicts (``verdicts:<digest>``)."""
    grace = dt.timedelta(seconds=max(svc.config.blob_grace, 2 * 600.0))
    kind, _, after = (cursor or "logs:").partition(":")
    if kind == "logs":
        batch = maintenance.collect_logs(db, now, grace, after)
        nxt = "verdicts:" if batch.cursor is None else f"logs:{batch.cursor}"
        return Step(batch.deleted, nxt)
    batch = maintenance.collect_verdicts(db, now, grace, after)
    return Step(batch.deleted, None if batch.cursor is None else f"verdicts:{batch.cursor}")


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    interval: Callable[[ServiceConfig], float]
    step: StepFn


JOBS = (
    Job("stale_sweep", lambda c: c.sweep_interval, _sweep),
    Job("retention", lambda c: c.retention_interval, _retention),
    Job("blob_gc", lambda c: c.retention_interval, _blob_gc),
)


def run_job(svc: Services, job: Job) -> int | None:
    """Run ``job`` now if its lease is free (due); the rows it changed, or None if not ours."""
    with svc.store.read() as db:  # most ticks find it held or not due: no write for that
        current = leases.holder_of(db, job.name)
    if current is not None and current[1] > svc.now():
        return None
    with svc.store.write() as db:
        held = leases.acquire(db, job.name, svc.holder, svc.now(), svc.config.lease_ttl)
    if held is None:
        return None
    cursor, total = held.cursor, 0
    for _ in range(MAX_BATCHES):
        now = svc.now()
        with svc.store.write() as db:
            if not leases.extend(db, held, now, svc.config.lease_ttl):
                log.warning("lost the lease of %s; another instance continues", job.name)
                return total
            step = job.step(svc, db, cursor, now)
            total += step.changed
            if step.cursor is None:
                due = now + dt.timedelta(seconds=job.interval(svc.config))
                leases.finish(db, held, now, due)
                return total
            cursor = step.cursor
            leases.extend(db, held, now, svc.config.lease_ttl, cursor)
    return total


def resume_reappraisals(svc: Services) -> int:
    """Finish re-appraisal jobs whose instance died (their lease expired)."""
    with svc.store.read() as db:
        pending = reappraisal.pending_jobs(db)
    done = 0
    for job_id in pending:
        with svc.store.write() as db:
            lease = reappraisal.job_lease(job_id)
            held = leases.acquire(db, lease, svc.holder, svc.now(), svc.config.lease_ttl)
        if held is not None:
            done += len(reappraisal.run_job(svc, job_id, held))
    return done


def tick(svc: Services) -> dict[str, int | None]:
    """One round of every job that is due (and free); what each changed."""
    out: dict[str, int | None] = {job.name: run_job(svc, job) for job in JOBS}
    out["reappraisal"] = resume_reappraisals(svc)
    return out


class Runner:
    """The background loop of one worker: ``tick`` every ``TICK`` seconds until stopped."""

    def __init__(self, svc: Services, interval: float = TICK) -> None:
        self.svc = svc
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="assay-jobs", daemon=True)

    def start(self) -> Runner:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                tick(self.svc)
            except AssayError as exc:  # an outage or a lock timeout: the next tick retries
                log.warning("background jobs: %s", exc)
            except Exception:  # a bug must not end the loop silently either
                log.exception("background jobs failed")
