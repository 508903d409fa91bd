"""The cluster inventory: node views (with staleness computed on read), history, admin actions,
re-appraisal.

A node is ``stale`` when it was trusted but has had no successful attestation within its freshness
window (``freshness_factor`` × ``attest_interval``): computed on every read, and persisted (with
an audit entry) by ``sweep_stale``. Every admin action is written to the audit log with who, what,
when and why, in the same transaction as the change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import Row, Table, and_, func, or_, select, update
from sqlalchemy.orm import Session

from verifier.appraisal import VerdictStatus
from verifier.store import hotpath, repo
from verifier.store.models import (
    Attestation,
    AttestationRepeat,
    AttestationSource,
    Node,
    NodeState,
    iso,
)

from . import events
from .attestation import StateChange, find_attestation, state_changed
from .context import Services
from .errors import BadRequest, Conflict, NotFound
from .reappraisal import Reappraisal, reappraise_nodes
from .rollout import Outdated, Standing

__all__ = ["Reappraisal", "reappraise_nodes"]  # re-exported: the API and CLI call them from here
NODES = cast(Table, Node.__table__)


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
        cls,
        node: NodeFields | Row[Any],
        now: dt.datetime,
        window: float,
        standing: Standing | None = None,
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
class Repeats:
    """Unchanged re-attestations counted on a full attestation: how many, first and last time,
    and the last quote as signed (its nonce, TPMS_ATTEST and signature)."""

    count: int
    first_at: dt.datetime
    last_at: dt.datetime
    last_nonce: bytes
    last_quote: bytes
    last_signature: bytes

    @classmethod
    def of(cls, r: AttestationRepeat) -> Repeats:
        return cls(r.count, r.first_at, r.last_at, r.last_nonce, r.last_quote, r.last_signature)

    def to_json(self, *, quote: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "count": self.count,
            "first_at": iso(self.first_at),
            "last_at": iso(self.last_at),
        }
        if quote:
            out["last_nonce"] = self.last_nonce.hex()
            out["last_quote"] = self.last_quote.hex()
            out["last_signature"] = self.last_signature.hex()
        return out


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
    repeats: Repeats | None = None

    @classmethod
    def of(
        cls, row: Attestation, node_name: str, repeat: AttestationRepeat | None = None
    ) -> AttestationView:
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
            None if repeat is None else Repeats.of(repeat),
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
            "repeats": None if self.repeats is None else self.repeats.to_json(),
        }


@dataclass(frozen=True, slots=True)
class AttestationDetail:
    """One attestation for a reviewer: its summary plus the full verdict, PCR values and nonce."""

    summary: AttestationView
    verdict: Mapping[str, Any]
    pcrs: Mapping[str, Mapping[str, str]]
    nonce: bytes
    repeat: AttestationRepeat | None = None

    def to_json(self) -> dict[str, Any]:
        repeats = self.summary.repeats
        return {
            **self.summary.to_json(),
            "repeats": None if repeats is None else repeats.to_json(quote=True),
            "verdict": self.verdict,
            "pcrs": self.pcrs,
            "nonce": self.nonce.hex(),
        }


def parse_state(text: str) -> NodeState:
    """A state named by a caller (a query, a flag); BadRequest ``bad_query`` if there is none."""
    try:
        return NodeState(text)
    except ValueError:
        raise BadRequest("bad_query", f"state must be one of {', '.join(NodeState)}") from None


def effective_state(
    node: NodeFields | Row[Any], now: dt.datetime, window: float
) -> tuple[NodeState, str]:
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
    """Every node in ``state`` with ``labels``, by name; ``booted``: only those whose last
    appraisal matched that version (``name@version``); ``outdated``: only those booting a
    revoked, retired or superseded version."""
    return list_page(svc, state=state, labels=labels, booted=booted, outdated=outdated).nodes


@dataclass(frozen=True, slots=True)
class NodePage:
    """Nodes in name order; ``next`` is the ``after`` of the next page (None: the last page)."""

    nodes: list[NodeView]
    next: str | None


PAGE_CHUNK = 2000


def _state_filter(state: NodeState | None, cutoff: dt.datetime) -> Any:
    """The stored condition of an effective ``state``: ``stale`` is also a trusted row past its
    window, and ``trusted`` only a trusted row within it."""
    c = NODES.c
    fresh = func.coalesce(c.last_success_at, c.enrolled_at) >= cutoff
    if state == NodeState.TRUSTED:
        return and_(c.state == NodeState.TRUSTED, fresh)
    if state == NodeState.STALE:
        return or_(c.state == NodeState.STALE, and_(c.state == NodeState.TRUSTED, ~fresh))
    return None if state is None else c.state == state


def list_page(
    svc: Services,
    *,
    state: NodeState | None,
    labels: Mapping[str, str],
    booted: str | None = None,
    outdated: bool = False,
    after: str = "",
    limit: int | None = None,
) -> NodePage:
    """One page of the inventory in name order after ``after`` (all of it when ``limit`` is
    None), as of one read; the state filter is applied in SQL, the label selector and the
    rollout filters (``booted``, ``outdated``) on the rows."""
    now, window = svc.now(), svc.config.freshness_window
    where = _state_filter(state, now - dt.timedelta(seconds=window))
    filtered = bool(labels) or booted is not None or outdated
    views: list[NodeView] = []
    with svc.store.read() as db:
        standing = _standing(db)
        chunk = PAGE_CHUNK if filtered or limit is None else limit
        while limit is None or len(views) < limit:
            q = select(NODES).where(NODES.c.name > after).order_by(NODES.c.name).limit(chunk)
            rows = db.execute(q if where is None else q.where(where)).all()
            for row in rows:
                if not repo.selector_matches(labels, row.labels):
                    continue
                if booted is not None and booted not in (row.booted_versions or ()):
                    continue
                view = NodeView.of(row, now, window, standing)
                if not outdated or view.outdated:
                    views.append(view)
            if len(rows) < chunk:
                break
            after = rows[-1].name
    if limit is not None and len(views) > limit:
        views = views[:limit]
    more = limit is not None and len(views) == limit
    return NodePage(views, views[-1].name if more and views else None)


def list_names(
    svc: Services,
    *,
    state: NodeState | None,
    labels: Mapping[str, str],
    booted: str | None = None,
    outdated: bool = False,
) -> list[str]:
    """The names of every node in ``state`` with ``labels`` (the scheduler's cheap form)."""
    if booted is not None or outdated:
        nodes = list_nodes(svc, state=state, labels=labels, booted=booted, outdated=outdated)
        return [n.name for n in nodes]
    now, window = svc.now(), svc.config.freshness_window
    where = _state_filter(state, now - dt.timedelta(seconds=window))
    if labels:
        q = select(NODES.c.name, NODES.c.labels).order_by(NODES.c.name)
        with svc.store.read() as db:
            rows = db.execute(q if where is None else q.where(where)).all()
        return [r.name for r in rows if repo.selector_matches(labels, r.labels)]
    q = select(NODES.c.name).order_by(NODES.c.name)
    with svc.store.read() as db:
        return list(db.scalars(q if where is None else q.where(where)))


def get_node(db: Session, name: str) -> Node:
    node = repo.get_node(db, name)
    if node is None:
        raise NotFound("node_unknown", f"no node named {name!r}")
    return node


def _standing(db: Session) -> Standing:
    """Every golden version's standing, for a view's ``outdated``."""
    return Standing(repo.list_golden(db))


def show_node(svc: Services, name: str) -> NodeView:
    with svc.store.read() as db:
        view = get_node(db, name)
        return NodeView.of(view, svc.now(), svc.config.freshness_window, _standing(db))


def node_history(svc: Services, name: str, *, limit: int) -> list[AttestationView]:
    """The node's newest ``limit`` attestations, newest first."""
    with svc.store.read() as db:
        node = get_node(db, name)
        rows = repo.node_attestations(db, node.id, limit=limit)
        repeats = hotpath.repeats_of(db, [r.id for r in rows])
        return [AttestationView.of(r, node.name, repeats.get(r.id)) for r in rows]


def attestation(svc: Services, attestation_id: str) -> AttestationDetail:
    with svc.store.read() as db:
        row, node = find_attestation(db, attestation_id)
        verdict = hotpath.verdict_of(db, row)
        repeat = hotpath.repeats_of(db, [row.id]).get(row.id)
        return AttestationDetail(
            AttestationView.of(row, node.name, repeat), verdict, row.pcrs, row.nonce, repeat
        )


SWEEP_BATCH = 500


def sweep_stale(svc: Services, actor: str = "sweep") -> list[str]:
    """Persist ``stale`` for every trusted node past its window; return their names (batches of
    ``SWEEP_BATCH`` nodes, one transaction each)."""
    changed: list[str] = []
    after: int | None = 0
    while after is not None:
        with svc.store.write() as db:
            names, after = sweep_batch(svc, db, after, svc.now(), actor)
        changed.extend(names)
    return changed


def sweep_batch(
    svc: Services, db: Session, after: int, now: dt.datetime, actor: str
) -> tuple[list[str], int | None]:
    """Mark stale the trusted nodes past their window with ids after ``after`` (one batch, in
    ``db``'s transaction); returns their names and where to resume (None: no more)."""
    window = svc.config.freshness_window
    last = func.coalesce(NODES.c.last_success_at, NODES.c.enrolled_at)
    cutoff = now - dt.timedelta(seconds=window)
    rows = db.execute(
        select(
            NODES.c.id,
            NODES.c.name,
            NODES.c.last_success_at,
            NODES.c.enrolled_at,
            NODES.c.reason,
            NODES.c.golden_versions,
        )
        .where(NODES.c.state == NodeState.TRUSTED, NODES.c.id > after, last < cutoff)
        .order_by(NODES.c.id)
        .limit(SWEEP_BATCH)
    ).all()
    changed = []
    for node_id, name, success, enrolled, was, golden in rows:
        reason = f"no successful attestation since {iso(success or enrolled)}"
        moved = db.execute(
            update(NODES)
            .where(NODES.c.id == node_id, NODES.c.state == NodeState.TRUSTED, last < cutoff)
            .values(state=NodeState.STALE, reason=reason, state_since=now)
        )
        if getattr(moved, "rowcount", 0) == 1:  # not re-attested meanwhile
            repo.audit(db, actor, "stale", name, reason, now=now)
            change = StateChange(
                node_id, name, NodeState.TRUSTED, was, NodeState.STALE, reason, now, None,
                tuple(golden or ()),
            )  # fmt: skip
            state_changed(db, change)
            changed.append(name)
    return changed, (rows[-1][0] if len(rows) == SWEEP_BATCH else None)


def quarantine(svc: Services, name: str, reason: str, actor: str) -> NodeView:
    now = svc.now()
    with svc.store.write() as db:
        node = get_node(db, name)
        if node.state == NodeState.QUARANTINED:
            raise Conflict("already_quarantined", f"node {name!r} is already quarantined")
        old, was = node.state, node.reason
        node.state, node.state_since = NodeState.QUARANTINED, now
        node.reason = f"quarantined: {reason}"
        repo.audit(db, actor, "quarantine", name, reason, now=now)
        change = StateChange(
            node.id, name, old, was, node.state, node.reason, now, None, tuple(node.golden_versions)
        )
        state_changed(db, change)
        return NodeView.of(node, now, svc.config.freshness_window, _standing(db))


def release(svc: Services, name: str, reason: str, actor: str) -> NodeView:
    """Lift a quarantine: the node returns to the state of its last verdict (or ``enrolled``)."""
    now = svc.now()
    with svc.store.write() as db:
        node = get_node(db, name)
        if node.state != NodeState.QUARANTINED:
            raise Conflict("not_quarantined", f"node {name!r} is not quarantined")
        last = db.get(Attestation, node.last_attestation_id) if node.last_attestation_id else None
        was = node.reason
        node.state = NodeState.after(last.status) if last else NodeState.ENROLLED
        node.reason = last.reason if last else "enrolled; awaiting the first attestation"
        node.state_since = now
        repo.audit(db, actor, "release", name, reason, now=now)
        change = StateChange(
            node.id, name, NodeState.QUARANTINED, was, node.state, node.reason, now, None,
            tuple(node.golden_versions),
        )  # fmt: skip
        state_changed(db, change)
        return NodeView.of(node, now, svc.config.freshness_window, _standing(db))


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
        return NodeView.of(node, now, svc.config.freshness_window, _standing(db))


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
