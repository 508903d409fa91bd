"""Readiness: whether this instance can serve attestations now (its database answers).

A load balancer or Kubernetes readiness probe takes an instance out of rotation while its
database is unreachable; ``/healthz`` (liveness) stays 200 so the process is not restarted for
an outage it cannot fix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from .context import Services


@dataclass(frozen=True, slots=True)
class Readiness:
    database: str
    round_trip_ms: float

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "database": self.database, "round_trip_ms": self.round_trip_ms}


def ready(svc: Services) -> Readiness:
    """One round trip to the database; ``StoreUnavailable`` (→ 503) when it does not answer."""
    start = time.perf_counter()
    with svc.store.read() as db:
        db.execute(text("SELECT 1"))
    elapsed = round((time.perf_counter() - start) * 1000, 2)
    return Readiness(svc.store.engine.dialect.name, elapsed)
