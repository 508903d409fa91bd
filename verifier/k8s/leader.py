"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does it.

Several controller replicas run; the one whose identity holds the Lease acts, the others wait.
The holder renews ``renewTime`` every ``renew`` seconds; a Lease not renewed for
``leaseDurationSeconds`` may be taken by another replica. Every write is a replace carrying the
read ``resourceVersion``, so two replicas racing for the same Lease cannot both win (one gets
409 Conflict). A leader that fails to renew within the duration stops acting at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from .kubeapi import KubeApi, KubeError


def micro_time(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: Any) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class LeaderElector:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        *,
        duration: int = 15,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.duration = duration
        self.clock = clock
        self.leading_until: dt.datetime | None = None

    def is_leader(self) -> bool:
        return self.leading_until is not None and self.clock() < self.leading_until

    def _spec(self, now: dt.datetime, acquired: Any, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "acquireTime": acquired or micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        }

    def try_acquire_or_renew(self) -> bool:
        """One round: True if this replica holds the Lease now."""
        now = self.clock()
        try:
            lease = self.api.get_lease(self.namespace, self.name)
        except KubeError as exc:
            if exc.status != 404:
                return self._lost()
            body = {"metadata": {"name": self.name}, "spec": self._spec(now, None, 0)}
            try:
                self.api.create_lease(self.namespace, body)
            except KubeError:
                return self._lost()
            return self._won(now)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = parse_time(spec.get("renewTime"))
        duration = int(spec.get("leaseDurationSeconds") or self.duration)
        held = holder and holder != self.identity and renewed is not None
        if held and renewed is not None and now < renewed + dt.timedelta(seconds=duration):
            return self._lost()
        mine = holder == self.identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        acquired = spec.get("acquireTime") if mine else None
        body = {"metadata": lease["metadata"], "spec": self._spec(now, acquired, transitions)}
        try:
            self.api.replace_lease(self.namespace, self.name, body)
        except KubeError:
            return self._lost()
        return self._won(now)

    def _won(self, now: dt.datetime) -> bool:
        self.leading_until = now + dt.timedelta(seconds=self.duration)
        return True

    def _lost(self) -> bool:
        if self.leading_until is not None and self.clock() >= self.leading_until:
            self.leading_until = None
        return self.is_leader()
