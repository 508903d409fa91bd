"""runtime integrity: runtime policies, their assignments, the IMA state per node and boot

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

- ``runtime_policies``: versions of runtime (IMA) policies with the store's status and reason,
  like ``golden_sets``; the YAML source is kept and compiled when a node needs it.
- ``runtime_assignments``: a policy (every version) applies to the nodes matching a selector.
- ``ima_states``: per node, the verified IMA prefix of its current boot (boot counters, entry
  count, byte offset, the replayed PCR values, the failing checks found so far, the policies it
  was judged by): what lets a node send only the entries added since.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "runtime_policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("source", sa.LargeBinary(), nullable=False),
        sa.Column("selector", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "version", name="uq_runtime_name_version"),
    )
    op.create_index("ix_runtime_policies_name", "runtime_policies", ["name"])
    op.create_table(
        "runtime_assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("policy_name", sa.String(length=200), nullable=False),
        sa.Column("selector", sa.JSON(), nullable=False),
        sa.Column("selector_key", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("policy_name", "selector_key", name="uq_runtime_assignment"),
    )
    op.create_table(
        "ima_states",
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("reset_count", sa.Integer(), nullable=False),
        sa.Column("restart_count", sa.Integer(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("offset", sa.Integer(), nullable=False),
        sa.Column("replay", sa.JSON(), nullable=False),
        sa.Column("carried", sa.JSON(), nullable=False),
        sa.Column("policy_key", sa.String(length=64), nullable=False),
        sa.Column("attestation_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("node_id"),
    )


def downgrade() -> None:
    op.drop_table("ima_states")
    op.drop_table("runtime_assignments")
    op.drop_index("ix_runtime_policies_name", table_name="runtime_policies")
    op.drop_table("runtime_policies")
