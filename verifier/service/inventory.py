"""The cluster inventory: node views (with staleness computed on read), history, admin actions,
re-appraisal.

A node is ``stale`` when it was trusted but has had no successful attestation within its freshness
window (``freshness_factor`` × ``attest_interval``): computed on every read, and persisted (with
an audit entry) by ``sweep_stale``. Every admin action is written to the audit log with who, what,
when and why, in the same transaction as the change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from assay.errors import MalformedEvidence, VerificationFailed
from assay.tpm2 import parse_public, verify_quote
from verifier.appraisal import VerdictStatus
from verifier.store import repo
from verifier.store.models import Attestation, AttestationSource, Node, NodeState, iso

from . import events
from .attestation import QuotedEvidence, appraise_evidence, find_attestation, pcrs_from_json, record
from .context import Services
from .errors import BadRequest, Conflict, NotFound
from .golden_policy import Assessment, failed
from .rollout import Outdated, Standing


class NodeFields(Protocol):
    """What a node view is made of: a ``Node`` row, or a lighter row of the same columns
    (the console's node list reads 10,000 of them without building ORM objects)."""

    name: str
    state: NodeState
    state_since: dt.datetime
    reason: str
    labels: dict[str, str]
    golden_versions: list[str]
    last_attestation_id: int | None
    last_attested_at: dt.datetime | None
    last_success_at: dt.datetime | None
    last_reset_count: int | None
    last_restart_count: int | None
    last_reboot_at: dt.datetime | None
    enrolled_at: dt.datetime
    ek_fingerprint: str
    ak_name: bytes
    booted_versions: list[str]


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node as the inventory shows it, its state as of the time it was read."""

    name: str
    state: NodeState
    state_since: dt.datetime
    reason: str
    labels: Mapping[str, str]
    golden: tuple[str, ...]
    last_attestation_id: int | None
    last_attested_at: dt.datetime | None
    last_success_at: dt.datetime | None
    reset_count: int | None
    restart_count: int | None
    last_reboot_at: dt.datetime | None
    enrolled_at: dt.datetime
    ek_fingerprint: str
    ak_name: bytes
    booted: tuple[str, ...] = ()
    outdated: tuple[Outdated, ...] = ()

    @classmethod
    def of(
        cls, node: NodeFields, now: dt.datetime, window: float, standing: Standing | None = None
    ) -> NodeView:
        state, reason = effective_state(node, now, window)
        booted = tuple(node.booted_versions or ())
        return cls(
            node.name,
            state,
            node.state_since,
            reason,
            dict(node.labels),
            tuple(node.golden_versions),
            node.last_attestation_id,
            node.last_attested_at,
            node.last_success_at,
            node.last_reset_count,
            node.last_restart_count,
            node.last_reboot_at,
            node.enrolled_at,
            node.ek_fingerprint,
            node.ak_name,
            booted,
            standing.outdated(booted, node.labels) if standing is not None else (),
        )

    def to_json(self) -> dict[str, Any]:
        last = self.last_attestation_id
        return {
            "name": self.name,
            "state": self.state,
            "state_since": iso(self.state_since),
            "reason": self.reason,
            "labels": dict(self.labels),
            "golden": list(self.golden),
            "last_attestation_id": None if last is None else str(last),
            "last_attested_at": iso(self.last_attested_at),
            "last_success_at": iso(self.last_success_at),
            "reset_count": self.reset_count,
            "restart_count": self.restart_count,
            "last_reboot_at": iso(self.last_reboot_at),
            "enrolled_at": iso(self.enrolled_at),
            "ek_fingerprint": self.ek_fingerprint,
            "ak_name": self.ak_name.hex(),
            "booted": list(self.booted),
            "outdated": [o.to_json() for o in self.outdated],
        }


@dataclass(frozen=True, slots=True)
class AttestationView:
    """One entry of a node's timeline."""

    id: int
    node: str
    time: dt.datetime
    source: AttestationSource
    status: VerdictStatus
    reason: str
    reset_count: int | None
    restart_count: int | None
    reboot: bool
    golden: tuple[str, ...]
    event_log_sha256: str | None
    agent_version: str

    @classmethod
    def of(cls, row: Attestation, node_name: str) -> AttestationView:
        return cls(
            row.id,
            node_name,
            row.created_at,
            row.source,
            row.status,
            row.reason,
            row.reset_count,
            row.restart_count,
            row.reboot,
            tuple(row.golden_versions),
            row.event_log_sha256,
            row.agent_version,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "node": self.node,
            "time": iso(self.time),
            "source": self.source,
            "status": self.status,
            "reason": self.reason,
            "reset_count": self.reset_count,
            "restart_count": self.restart_count,
            "reboot": self.reboot,
            "golden": list(self.golden),
            "event_log_sha256": self.event_log_sha256,
            "agent_version": self.agent_version,
        }


@dataclass(frozen=True, slots=True)
class AttestationDetail:
    """One attestation for a reviewer: its summary plus the full verdict, PCR values and nonce."""

    summary: AttestationView
    verdict: Mapping[str, Any]
    pcrs: Mapping[str, Mapping[str, str]]
    nonce: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summary.to_json(),
            "verdict": self.verdict,
            "pcrs": self.pcrs,
            "nonce": self.nonce.hex(),
        }


@dataclass(frozen=True, slots=True)
class Reappraisal:
    """What re-appraising one node's stored evidence did."""

    node: str
    status: VerdictStatus
    state: NodeState
    reason: str
    attestation_id: int

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "status": self.status,
            "state": self.state,
            "reason": self.reason,
            "attestation_id": str(self.attestation_id),
        }


def parse_state(text: str) -> NodeState:
    """A state named by a caller (a query, a flag); BadRequest ``bad_query`` if there is none."""
    try:
        return NodeState(text)
    except ValueError:
        raise BadRequest("bad_query", f"state must be one of {', '.join(NodeState)}") from None


def effective_state(node: NodeFields, now: dt.datetime, window: float) -> tuple[NodeState, str]:
    """(state, reason) as of ``now``: a trusted node past its freshness window reads as stale."""
    if node.state == NodeState.TRUSTED:
        last = node.last_success_at or node.enrolled_at
        if (now - last).total_seconds() > window:
            return NodeState.STALE, f"no successful attestation since {iso(last)}"
    return node.state, node.reason


def list_nodes(
    svc: Services,
    *,
    state: NodeState | None,
    labels: Mapping[str, str],
    booted: str | None = None,
    outdated: bool = False,
) -> list[NodeView]:
    """Nodes in ``state`` with ``labels``; ``booted``: only those whose last appraisal matched
    that version (``name@version``); ``outdated``: only those booting a revoked, retired or
    superseded version."""
    now, window = svc.now(), svc.config.freshness_window
    with svc.store.read() as db:
        # "stale" is also derived from "trusted" rows: filter on the computed state.
        stored = None
        if state is not None:
            derived = (NodeState.TRUSTED, NodeState.STALE)
            stored = list(derived) if state in derived else [state]
        standing = Standing(repo.list_golden(db))
        views = [
            NodeView.of(n, now, window, standing)
            for n in repo.list_nodes(db, states=stored, labels=labels)
            if booted is None or booted in (n.booted_versions or ())
        ]
    return [
        v for v in views if (state is None or v.state == state) and (not outdated or v.outdated)
    ]


def get_node(db: Session, name: str) -> Node:
    node = repo.get_node(db, name)
    if node is None:
        raise NotFound("node_unknown", f"no node named {name!r}")
    return node


def show_node(svc: Services, name: str) -> NodeView:
    with svc.store.read() as db:
        standing = Standing(repo.list_golden(db))
        return NodeView.of(get_node(db, name), svc.now(), svc.config.freshness_window, standing)


def node_history(svc: Services, name: str, *, limit: int) -> list[AttestationView]:
    """The node's newest ``limit`` attestations, newest first."""
    with svc.store.read() as db:
        node = get_node(db, name)
        rows = repo.node_attestations(db, node.id, limit=limit)
        return [AttestationView.of(r, node.name) for r in rows]


def attestation(svc: Services, attestation_id: str) -> AttestationDetail:
    with svc.store.read() as db:
        row, node = find_attestation(db, attestation_id)
        return AttestationDetail(
            AttestationView.of(row, node.name), row.verdict, row.pcrs, row.nonce
        )


def sweep_stale(svc: Services, actor: str = "sweep") -> list[str]:
    """Persist ``stale`` for every trusted node past its window; return their names."""
    now, window = svc.now(), svc.config.freshness_window
    changed: list[str] = []
    with svc.store.write() as db:
        for node in repo.list_nodes(db, states=[NodeState.TRUSTED]):
            state, reason = effective_state(node, now, window)
            if state == NodeState.STALE:
                before = events.standing(node)
                node.state, node.reason, node.state_since = state, reason, now
                events.node_state_changed(db, node, before, now=now)
                repo.audit(db, actor, "stale", node.name, reason, now=now)
                changed.append(node.name)
    return changed


def quarantine(svc: Services, name: str, reason: str, actor: str) -> NodeView:
    now = svc.now()
    with svc.store.write() as db:
        node = get_node(db, name)
        if node.state == NodeState.QUARANTINED:
            raise Conflict("already_quarantined", f"node {name!r} is already quarantined")
        before = events.standing(node)
        node.state, node.state_since = NodeState.QUARANTINED, now
        node.reason = f"quarantined: {reason}"
        events.node_state_changed(db, node, before, now=now)
        repo.audit(db, actor, "quarantine", name, reason, now=now)
        return NodeView.of(node, now, svc.config.freshness_window)


def release(svc: Services, name: str, reason: str, actor: str) -> NodeView:
    """Lift a quarantine: the node returns to the state of its last verdict (or ``enrolled``)."""
    now = svc.now()
    with svc.store.write() as db:
        node = get_node(db, name)
        if node.state != NodeState.QUARANTINED:
            raise Conflict("not_quarantined", f"node {name!r} is not quarantined")
        last = db.get(Attestation, node.last_attestation_id) if node.last_attestation_id else None
        before = events.standing(node)
        node.state = NodeState.after(last.status) if last else NodeState.ENROLLED
        node.reason = last.reason if last else "enrolled; awaiting the first attestation"
        node.state_since = now
        events.node_state_changed(db, node, before, now=now)
        repo.audit(db, actor, "release", name, reason, now=now)
        return NodeView.of(node, now, svc.config.freshness_window)


def delete_node(svc: Services, name: str, reason: str, actor: str) -> None:
    now = svc.now()
    with svc.store.write() as db:
        node = get_node(db, name)
        repo.audit(
            db, actor, "delete", name, reason, {"ek_fingerprint": node.ek_fingerprint}, now=now
        )
        db.delete(node)
        events.node_deleted(db, name, now=now)


def allow_replace(svc: Services, name: str, reason: str, actor: str) -> None:
    """Let the next enrollment of ``name`` bring a different EK (a new machine or TPM)."""
    now = svc.now()
    with svc.store.write() as db:
        node = get_node(db, name)
        node.replace_allowed = True
        repo.audit(db, actor, "allow_replace", name, reason, now=now)


def move_node(svc: Services, name: str, new_name: str, reason: str, actor: str) -> NodeView:
    """Give the node (its TPM, labels, state and history) a new name: one TPM stays one node."""
    now = svc.now()
    with svc.store.write() as db:
        node = get_node(db, name)
        if repo.get_node(db, new_name) is not None:
            raise Conflict("node_exists", f"node {new_name!r} exists; delete it first")
        node.name = new_name
        events.node_moved(db, name, new_name, now=now)
        details = {"from": name, "to": new_name, "ek_fingerprint": node.ek_fingerprint}
        for target in (name, new_name):
            repo.audit(db, actor, "move", target, reason, details, now=now)
        return NodeView.of(node, now, svc.config.freshness_window)


def set_labels(
    svc: Services, name: str, labels: Mapping[str, str], reason: str, actor: str
) -> NodeView:
    """An admin sets the labels that select the node's golden sets; its evidence is re-appraised."""
    now = svc.now()
    with svc.store.write() as db:
        node = get_node(db, name)
        before = dict(node.labels)
        node.labels = dict(labels)
        repo.audit(db, actor, "labels", name, reason, {"from": before, "to": dict(labels)}, now=now)
    reappraise_nodes(svc, [name], f"labels changed: {reason}", actor)
    return show_node(svc, name)


def reappraise_nodes(
    svc: Services, names: Sequence[str] | None, reason: str, actor: str
) -> list[Reappraisal]:
    """Re-appraise the latest stored evidence of each node (all when ``names`` is None).

    The stored quote is verified again with the node's AK and nonce, the log replayed against it
    (cached when unchanged), and the verdict recorded (``attestation.record``) as a
    ``reappraisal`` attestation that moves the node's state — all nodes in one transaction, so the
    inventory flips at once. It never refreshes a node: freshness stays that of the stored
    evidence.
    """
    now = svc.now()
    results: list[Reappraisal] = []
    with svc.store.write() as db:
        nodes = repo.list_nodes(db) if names is None else [get_node(db, n) for n in names]
        for node in nodes:
            last = repo.latest_evidence(db, node.id)
            if last is None:
                continue
            a = _reassess(svc, db, node, last)
            row = record(
                db,
                node,
                QuotedEvidence.of(last),
                a,
                source=AttestationSource.REAPPRAISAL,
                now=now,
                quoted_at=last.created_at,
            )
            details = {"status": a.status, "attestation_id": row.id}
            repo.audit(db, actor, "reappraise", node.name, reason, details, now=now)
            results.append(Reappraisal(node.name, a.status, node.state, a.reason, row.id))
    return results


def _reassess(svc: Services, db: Session, node: Node, last: Attestation) -> Assessment:
    try:
        quote = verify_quote(
            last.quote,
            last.signature,
            parse_public(node.ak_public),
            last.nonce,
            pcrs_from_json(last.pcrs),
        )
    except (VerificationFailed, MalformedEvidence) as exc:
        return failed(VerdictStatus.UNKNOWN, "stored_evidence_invalid", str(exc))
    if last.event_log_sha256 is None:
        return failed(VerdictStatus.UNKNOWN, "event_log_missing", "no event log stored")
    rows = repo.golden_rows_for(db, node.labels)
    return appraise_evidence(svc, quote, last.event_log_sha256, None, rows)
