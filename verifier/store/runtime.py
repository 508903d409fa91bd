"""Tables and queries of runtime integrity (migration 0008): runtime policies (versioned like
golden sets), their label-selector assignments, and the IMA replay state kept per node and boot.

Kept apart from ``models``/``repo`` (the attestation path's) like ``cluster``; the models share
``Base``, so ``tests/test_store.py`` compares them with the migrations too.

``ima_states`` is what makes the incremental path safe: the verifier, never the node, says where a
node's next IMA chunk starts. A row is written only in the transaction that records an attestation
whose quote verified and whose IMA entries replayed to the quoted PCR10 (``put_ima_state``), and it
is dropped when that cannot be continued (``drop_ima_state``: a mismatch, a policy change).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    delete,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from .models import Base, UtcDateTime, VersionedColumns
from .repo import (
    add_assignment,
    get_version,
    list_versions,
    selector_matches,
    versions_named,
)


class RuntimePolicyRow(VersionedColumns, Base):
    """One stored version of a runtime policy: its YAML source and the store's status."""

    __tablename__ = "runtime_policies"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_runtime_name_version"),)


class RuntimeAssignment(Base):
    """Runtime policy ``policy_name`` (every version) applies to nodes whose labels match."""

    __tablename__ = "runtime_assignments"
    __table_args__ = (
        UniqueConstraint("policy_name", "selector_key", name="uq_runtime_assignment"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy_name: Mapped[str] = mapped_column(String(200))
    selector: Mapped[dict[str, str]] = mapped_column(JSON)
    selector_key: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class ImaState(Base):
    """A node's verified IMA prefix for one boot (``reset_count``/``restart_count``): the replay
    after ``entries`` entries (``offset`` bytes), the failing checks found so far this boot
    (an executed unknown file stays executed), and the key of the policies it was judged by."""

    __tablename__ = "ima_states"

    node_id: Mapped[int] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    reset_count: Mapped[int] = mapped_column(Integer)
    restart_count: Mapped[int] = mapped_column(Integer)
    entries: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(Integer)
    replay: Mapped[dict[str, Any]] = mapped_column(JSON)
    carried: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    policy_key: Mapped[str] = mapped_column(String(64))
    attestation_id: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


# --- policies and assignments ---------------------------------------------------------------


def get_policy(s: Session, name: str, version: str) -> RuntimePolicyRow | None:
    return get_version(s, RuntimePolicyRow, name, version)


def list_policies(s: Session, *, name: str | None = None) -> list[RuntimePolicyRow]:
    return list_versions(s, RuntimePolicyRow, name=name)


def list_assignments(s: Session) -> list[RuntimeAssignment]:
    return list(s.scalars(select(RuntimeAssignment).order_by(RuntimeAssignment.id)))


def assign(s: Session, name: str, selector: Mapping[str, str], now: dt.datetime) -> bool:
    """Assign every version of policy ``name`` to nodes matching ``selector``; False if present."""
    return add_assignment(s, RuntimeAssignment, "policy_name", name, selector, now)


def names_for(labels: Mapping[str, str], assignments: Sequence[RuntimeAssignment]) -> set[str]:
    return {a.policy_name for a in assignments if selector_matches(a.selector, labels)}


def rows_for(s: Session, labels: Mapping[str, str]) -> list[RuntimePolicyRow]:
    """Every stored version (any status) of every runtime policy assigned to nodes with
    ``labels``: the not-in-force ones too, so a verdict can say "only a revoked policy approves"."""
    return versions_named(
        s, RuntimePolicyRow, names_for(labels, list_assignments(s)), defer_source=True
    )


# --- IMA state per node and boot ------------------------------------------------------------


def get_ima_state(s: Session, node_id: int) -> ImaState | None:
    return s.get(ImaState, node_id)


def put_ima_state(
    s: Session,
    node_id: int,
    *,
    reset_count: int,
    restart_count: int,
    entries: int,
    offset: int,
    replay: dict[str, Any],
    carried: list[dict[str, Any]],
    policy_key: str,
    attestation_id: int | None,
    now: dt.datetime,
) -> None:
    """Store (replace) the node's verified prefix; only after a verified quote (the caller's)."""
    row = s.get(ImaState, node_id)
    if row is None:
        row = ImaState(node_id=node_id)
        s.add(row)
    row.reset_count, row.restart_count = reset_count, restart_count
    row.entries, row.offset, row.replay = entries, offset, replay
    row.carried, row.policy_key = carried, policy_key
    row.attestation_id, row.updated_at = attestation_id, now


def drop_ima_state(s: Session, node_ids: Sequence[int]) -> None:
    """Forget these nodes' prefixes: their next chunk must be the full list."""
    if node_ids:
        s.execute(delete(ImaState).where(ImaState.node_id.in_(list(node_ids))))
