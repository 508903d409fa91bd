"""The cluster inventory: node views (with staleness computed on read), admin actions, re-appraisal.

A node is ``stale`` when it was trusted but has had no successful attestation within its freshness
window (``freshness_factor`` × ``attest_interval``): computed on every read, and persisted (with
an audit entry) by ``sweep_stale``. Every admin action is written to the audit log with who, what,
when and why, in the same transaction as the change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from assay.errors import MalformedEvidence, VerificationFailed
from assay.tpm2 import parse_public, verify_quote
from verifier.appraisal import VerdictStatus
from verifier.store import repo
from verifier.store.models import Attestation, AttestationSource, Node, NodeState

from .attestation import QuotedEvidence, appraise_evidence, pcrs_from_json, record
from .context import Services
from .errors import bad_request, conflict, not_found
from .golden_policy import Assessment, failed


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def parse_state(text: str) -> NodeState:
    """A state named by a caller (a query, a flag); ``bad_query`` if there is none."""
    try:
        return NodeState(text)
    except ValueError:
        raise bad_request("bad_query", f"state must be one of {', '.join(NodeState)}") from None


def effective_state(node: Node, now: dt.datetime, window: float) -> tuple[NodeState, str]:
    """(state, reason) as of ``now``: a trusted node past its freshness window reads as stale."""
    if node.state == NodeState.TRUSTED:
        last = node.last_success_at or node.enrolled_at
        if (now - last).total_seconds() > window:
            return NodeState.STALE, f"no successful attestation since {_iso(last)}"
    return node.state, node.reason


def node_json(node: Node, now: dt.datetime, window: float) -> dict[str, Any]:
    state, reason = effective_state(node, now, window)
    return {
        "name": node.name,
        "state": state,
        "state_since": _iso(node.state_since),
        "reason": reason,
        "labels": node.labels,
        "golden": node.golden_versions,
        "last_attestation_id": None
        if node.last_attestation_id is None
        else str(node.last_attestation_id),
        "last_attested_at": _iso(node.last_attested_at),
        "last_success_at": _iso(node.last_success_at),
        "reset_count": node.last_reset_count,
        "restart_count": node.last_restart_count,
        "last_reboot_at": _iso(node.last_reboot_at),
        "enrolled_at": _iso(node.enrolled_at),
        "ek_fingerprint": node.ek_fingerprint,
        "ak_name": node.ak_name.hex(),
    }


def attestation_json(row: Attestation, node_name: str, *, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(row.id),
        "node": node_name,
        "time": _iso(row.created_at),
        "source": row.source,
        "status": row.status,
        "reason": row.reason,
        "reset_count": row.reset_count,
        "restart_count": row.restart_count,
        "reboot": row.reboot,
        "golden": row.golden_versions,
        "event_log_sha256": row.event_log_sha256,
        "agent_version": row.agent_version,
    }
    if full:
        out["verdict"] = row.verdict
        out["pcrs"] = row.pcrs
        out["nonce"] = row.nonce.hex()
    return out


def list_nodes(
    svc: Services, *, state: NodeState | None, labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    now, window = svc.now(), svc.config.freshness_window
    with svc.store.read() as db:
        # "stale" is also derived from "trusted" rows: filter on the computed state.
        stored = None
        if state is not None:
            derived = (NodeState.TRUSTED, NodeState.STALE)
            stored = list(derived) if state in derived else [state]
        nodes = repo.list_nodes(db, states=stored, labels=labels)
        views = [node_json(n, now, window) for n in nodes]
    return [v for v in views if state is None or v["state"] == state]


def get_node(db: Session, name: str) -> Node:
    node = repo.get_node(db, name)
    if node is None:
        raise not_found("node_unknown", f"no node named {name!r}")
    return node


def show_node(svc: Services, name: str) -> dict[str, Any]:
    with svc.store.read() as db:
        return node_json(get_node(db, name), svc.now(), svc.config.freshness_window)


def sweep_stale(svc: Services, actor: str = "sweep") -> list[str]:
    """Persist ``stale`` for every trusted node past its window; return their names."""
    now, window = svc.now(), svc.config.freshness_window
    changed: list[str] = []
    with svc.store.write() as db:
        for node in repo.list_nodes(db, states=[NodeState.TRUSTED]):
            state, reason = effective_state(node, now, window)
            if state == NodeState.STALE:
                node.state, node.reason, node.state_since = state, reason, now
                repo.audit(db, actor, "stale", node.name, reason, now=now)
                changed.append(node.name)
    return changed


def quarantine(svc: Services, name: str, reason: str, actor: str) -> dict[str, Any]:
    now = svc.now()
    with svc.store.write() as db:
        node = get_node(db, name)
        if node.state == NodeState.QUARANTINED:
            raise conflict("already_quarantined", f"node {name!r} is already quarantined")
        node.state, node.state_since = NodeState.QUARANTINED, now
        node.reason = f"quarantined: {reason}"
        repo.audit(db, actor, "quarantine", name, reason, now=now)
        return node_json(node, now, svc.config.freshness_window)


def release(svc: Services, name: str, reason: str, actor: str) -> dict[str, Any]:
    """Lift a quarantine: the node returns to the state of its last verdict (or ``enrolled``)."""
    now = svc.now()
    with svc.store.write() as db:
        node = get_node(db, name)
        if node.state != NodeState.QUARANTINED:
            raise conflict("not_quarantined", f"node {name!r} is not quarantined")
        last = db.get(Attestation, node.last_attestation_id) if node.last_attestation_id else None
        node.state = NodeState.after(last.status) if last else NodeState.ENROLLED
        node.reason = last.reason if last else "enrolled; awaiting the first attestation"
        node.state_since = now
        repo.audit(db, actor, "release", name, reason, now=now)
        return node_json(node, now, svc.config.freshness_window)


def delete_node(svc: Services, name: str, reason: str, actor: str) -> None:
    now = svc.now()
    with svc.store.write() as db:
        node = get_node(db, name)
        repo.audit(
            db, actor, "delete", name, reason, {"ek_fingerprint": node.ek_fingerprint}, now=now
        )
        db.delete(node)


def allow_replace(svc: Services, name: str, reason: str, actor: str) -> None:
    """Let the next enrollment of ``name`` bring a different EK (a new machine or TPM)."""
    now = svc.now()
    with svc.store.write() as db:
        node = get_node(db, name)
        node.replace_allowed = True
        repo.audit(db, actor, "allow_replace", name, reason, now=now)


def move_node(svc: Services, name: str, new_name: str, reason: str, actor: str) -> dict[str, Any]:
    """Give the node (its TPM, labels, state and history) a new name: one TPM stays one node."""
    now = svc.now()
    with svc.store.write() as db:
        node = get_node(db, name)
        if repo.get_node(db, new_name) is not None:
            raise conflict("node_exists", f"node {new_name!r} exists; delete it first")
        node.name = new_name
        details = {"from": name, "to": new_name, "ek_fingerprint": node.ek_fingerprint}
        for target in (name, new_name):
            repo.audit(db, actor, "move", target, reason, details, now=now)
        return node_json(node, now, svc.config.freshness_window)


def set_labels(
    svc: Services, name: str, labels: Mapping[str, str], reason: str, actor: str
) -> dict[str, Any]:
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
) -> list[dict[str, Any]]:
    """Re-appraise the latest stored evidence of each node (all when ``names`` is None).

    The stored quote is verified again with the node's AK and nonce, the log replayed against it
    (cached when unchanged), and the verdict recorded (``attestation.record``) as a
    ``reappraisal`` attestation that moves the node's state — all nodes in one transaction, so the
    inventory flips at once. It never refreshes a node: freshness stays that of the stored
    evidence.
    """
    now = svc.now()
    results: list[dict[str, Any]] = []
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
            results.append(
                {
                    "node": node.name,
                    "status": a.status,
                    "state": node.state,
                    "reason": a.reason,
                    "attestation_id": str(row.id),
                }
            )
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
