"""``python -m verifier k8s-controller``: Assay verdicts onto Kubernetes Nodes.

What it writes is ``desired``'s (labels, annotations, taints, the ``AssayAttested`` condition);
this module decides when. Threads:
 1. leader election on a Lease (``leader``): only the holder reconciles; on winning it queues
    every node;
 2. a list + watch of Nodes: new Nodes are reconciled at once (the unattested taint), and a
    Node whose Assay-owned fields someone changed is put back;
 3. the verifier's change feed, long-polled (``GET /v1/events``): a state change reaches the
    Node within a second or two, and only the changed node is reconciled — no fleet polling;
 4. timers: a trusted node is looked at again just before its EAR expires (refreshing the
    annotation, or tainting it the moment it turns stale), and every node every ``resync`` s;
 5. workers reconciling one node at a time from a de-duplicating queue, with per-node
    exponential backoff on any API error (counted in ``assay_controller_reconcile_errors_total``).
"""

from __future__ import annotations

import base64
import datetime as dt
import heapq
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from assay.errors import MalformedEvidence, VerificationFailed
from verifier.ear import EarClaims, EarStatus, verify_ear

from . import desired
from .desired import ABSENT, ANN_EAR, UNREACHABLE, Policy, Standing
from .kubeapi import KubeApi, KubeError
from .leader import LeaderElector
from .verifier_api import VerifierApi, VerifierUnavailable

log = logging.getLogger("assay.k8s")
MAX_BACKOFF = 60.0
CONFLICT_RETRIES = 5


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    namespace: str = "assay-system"
    lease_name: str = "assay-node-controller"
    identity: str = "assay-node-controller"
    resync: float = 300.0
    node_name_label: str | None = None
    """Take the Assay node name from this Node label (default: the Node's own name)."""
    node_name_annotation: str | None = None
    """…or from this Node annotation (the label wins when both are configured and present)."""
    refresh_margin: float = 60.0
    """Refresh a node's EAR annotation when it expires within this many seconds."""
    workers: int = 2
    lease_duration: int = 15
    policy: Policy = field(default_factory=Policy)


class WorkQueue:
    """Node names due at a time; a name queued twice is reconciled once (at the earlier time)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._cv = threading.Condition()

    def put(self, name: str, delay: float = 0.0) -> None:
        due = time.monotonic() + max(0.0, delay)
        with self._cv:
            if name in self._due and self._due[name] <= due:
                return
            self._due[name] = due
            heapq.heappush(self._heap, (due, name))
            self._cv.notify()

    def get(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                now = time.monotonic()
                while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded by an earlier entry
                if self._heap and self._heap[0][0] <= now:
                    _, name = heapq.heappop(self._heap)
                    del self._due[name]
                    return name
                wait = min(deadline, self._heap[0][0] if self._heap else deadline) - now
                if now >= deadline:
                    return None
                self._cv.wait(max(0.01, wait))

    def __len__(self) -> int:
        with self._cv:
            return len(self._due)


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unverified_exp(token: str | None) -> int:
    """When an EAR we annotated ourselves expires (for refresh timing only — never for trust)."""
    if not token:
        return 0
    try:
        part = token.split(".")[1]
        exp = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))).get("exp")
    except (IndexError, ValueError):
        return 0
    return exp if isinstance(exp, int) else 0


class Controller:
    def __init__(
        self,
        cfg: ControllerConfig,
        kube: KubeApi,
        verifier: VerifierApi,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg, self.kube, self.verifier, self.clock = cfg, kube, verifier, clock
        self.queue = WorkQueue()
        self.nodes: dict[str, dict[str, Any]] = {}
        self._by_assay: dict[str, set[str]] = {}
        """Assay node name → the Kubernetes Nodes mapped to it (kept with ``nodes``)."""
        self.failures: dict[str, int] = {}
        self.applied: dict[str, Standing] = {}
        """The standing last written to each Node (to tell our own changes from others')."""
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.elector = LeaderElector(
            kube, cfg.namespace, cfg.lease_name, cfg.identity, duration=cfg.lease_duration
        )
        reg = registry or CollectorRegistry()
        self.reconciles = Counter(
            "assay_controller_reconciles", "Nodes reconciled", ["result"], registry=reg
        )
        self.errors = Counter(
            "assay_controller_reconcile_errors", "Reconcile errors", ["kind"], registry=reg
        )

    # --- names ------------------------------------------------------------------------------

    def assay_name(self, node: dict[str, Any]) -> str:
        meta = node.get("metadata") or {}
        label, annotation = self.cfg.node_name_label, self.cfg.node_name_annotation
        if not label and not annotation:
            return str(meta.get("name", ""))
        found = (meta.get("labels") or {}).get(label) if label else None
        if found is None and annotation:
            found = (meta.get("annotations") or {}).get(annotation)
        return str(found or "")

    def k8s_names_for(self, assay: str) -> list[str]:
        with self.lock:
            return sorted(self._by_assay.get(assay, ()))

    def set_node(self, node: dict[str, Any]) -> None:
        """Cache a Node as the API returned it, keeping the name index in step."""
        name = str(node["metadata"]["name"])
        with self.lock:
            self._unindex(name)
            self.nodes[name] = node
            self._by_assay.setdefault(self.assay_name(node), set()).add(name)

    def drop_node(self, name: str) -> None:
        with self.lock:
            self._unindex(name)
            self.nodes.pop(name, None)

    def set_nodes(self, nodes: list[dict[str, Any]]) -> None:
        with self.lock:
            self.nodes, self._by_assay = {}, {}
        for node in nodes:
            self.set_node(node)

    def _unindex(self, name: str) -> None:
        old = self.nodes.get(name)
        if old is not None:
            names = self._by_assay.get(self.assay_name(old))
            if names is not None:
                names.discard(name)

    def ours_differ(self, node: dict[str, Any]) -> bool:
        """Whether a Node no longer carries what this controller last wrote to it."""
        with self.lock:
            st = self.applied.get(str((node.get("metadata") or {}).get("name")))
        if st is None:
            return True
        st = replace(st, ear=None)  # a different EAR alone is no reason to reconcile
        now = _now_text()
        patch = desired.node_patch(node, st, self.cfg.policy, now)
        return patch is not None or desired.status_patch(node, st, now) is not None

    def queue_all(self) -> None:
        with self.lock:
            names = list(self.nodes)
        for name in names:
            self.queue.put(name)

    # --- one node ---------------------------------------------------------------------------

    def standing(self, assay: str, node: dict[str, Any]) -> Standing:
        """What to act on: a verified EAR, ABSENT, or UNREACHABLE once the last one expired."""
        now = int(self.clock())
        if not assay:
            return Standing(ABSENT, "no Assay node name")
        try:
            token = self.verifier.ear(assay)
            if token is None:
                return Standing(ABSENT)
            try:
                result = verify_ear(token, self.verifier.jwks(), now=now, node=assay)
            except VerificationFailed:  # maybe a key rotated since the JWKS was fetched
                result = verify_ear(token, self.verifier.jwks(refresh=True), now=now, node=assay)
        except (VerifierUnavailable, VerificationFailed, MalformedEvidence) as exc:
            if self.annotated_result(assay, node) is not None:
                raise  # our last signed result still holds: retry with backoff, change nothing
            self.errors.labels("verifier").inc()
            return Standing(UNREACHABLE, type(exc).__name__)
        c = result.claims
        # Trusted only if the signed status is affirming, whatever else the token says.
        if c.status == EarStatus.AFFIRMING:
            state = "trusted"
        else:
            state = c.state if c.state and c.state != "trusted" else "unknown"
        golden = c.submods["boot"].policy_ids if "boot" in c.submods else ()
        return Standing(state, c.reason, golden, token, c.exp)

    def annotated_result(self, assay: str, node: dict[str, Any]) -> EarClaims | None:
        """The Node's EAR annotation, if it verifies (signature, node, not expired) with the keys
        already held. A kubelet can write its own Node's annotations, so an unverified one is
        never believed — not even for how long to wait."""
        token = ((node.get("metadata") or {}).get("annotations") or {}).get(ANN_EAR)
        if not isinstance(token, str):
            return None
        try:
            keys = self.verifier.jwks(cached_only=True)
            return verify_ear(token, keys, now=int(self.clock()), node=assay).claims
        except (VerifierUnavailable, VerificationFailed, MalformedEvidence):
            return None

    def _keep_fresh_annotation(self, node: dict[str, Any], st: Standing) -> Standing:
        """Keep the annotated EAR while it verifies, is about the same state and is not close to
        expiry (fewer writes); otherwise the new one is written."""
        if st.ear is None:
            return st
        old = self.annotated_result(self.assay_name(node), node)
        fresh = old is not None and old.exp >= self.clock() + self.cfg.refresh_margin
        affirming = old is not None and old.status == EarStatus.AFFIRMING
        if (
            old is not None
            and fresh
            and old.state == st.state
            and affirming == (st.state == "trusted")
        ):
            token = ((node.get("metadata") or {}).get("annotations") or {})[ANN_EAR]
            return replace(st, ear=token, ear_exp=old.exp)
        return st

    def _apply(self, name: str, st: Standing) -> tuple[dict[str, Any], Standing]:
        for _ in range(CONFLICT_RETRIES):
            node = self.kube.get_node(name)
            st2 = self._keep_fresh_annotation(node, st)
            with self.lock:
                self.applied[name] = st2  # before writing: the watch event of our own patch
            patch = desired.node_patch(node, st2, self.cfg.policy, _now_text())
            try:
                if patch is not None:
                    node = self.kube.patch_node(name, patch)
                status = desired.status_patch(node, st2, _now_text())
                if status is not None:
                    node = self.kube.patch_node_status(name, status)
                return node, st2
            except KubeError as exc:
                if exc.status != 409:
                    raise
                self.errors.labels("conflict").inc()  # someone changed the Node: read again
        raise KubeError(409, f"node {name}: still conflicting after {CONFLICT_RETRIES} tries")

    def reconcile(self, name: str) -> float | None:
        """Bring one Node in line; seconds until it should be looked at again (None: resync)."""
        with self.lock:
            node = self.nodes.get(name)
        if node is None:
            return None
        st = self.standing(self.assay_name(node), node)
        written, applied = self._apply(name, st)
        with self.lock:
            known = name in self.nodes
            self.applied[name] = applied
        if known:
            self.set_node(written)
        exp = unverified_exp(
            ((written.get("metadata") or {}).get("annotations") or {}).get(ANN_EAR)
        )
        if st.state == "trusted" and exp:
            due = exp - self.cfg.refresh_margin
            return max(0.5, (due if due > self.clock() + 1 else exp + 0.5) - self.clock())
        return None

    def work_once(self, timeout: float = 0.5) -> bool:
        name = self.queue.get(timeout)
        if name is None:
            return False
        if not self.elector.is_leader():
            return True
        try:
            again = self.reconcile(name)
        except (KubeError, VerifierUnavailable, VerificationFailed, MalformedEvidence) as exc:
            tries = self.failures[name] = self.failures.get(name, 0) + 1
            self.errors.labels(type(exc).__name__).inc()
            self.reconciles.labels("error").inc()
            delay = min(MAX_BACKOFF, 0.5 * 2 ** (tries - 1))
            log.warning("reconcile %s failed (%s); again in %.1f s", name, exc, delay)
            self.queue.put(name, delay)
            return True
        self.failures.pop(name, None)
        self.reconciles.labels("ok").inc()
        if again is not None:
            self.queue.put(name, again)
        return True
