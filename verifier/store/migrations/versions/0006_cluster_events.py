"""the cluster acts on verdicts: the change feed and webhook outbox, delivery cursors, EAR keys

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

- ``cluster_events``: one row per node state change and golden revocation, written in the same
  transaction as the change (``verifier.service.events``). It is the webhooks' durable outbox and
  the change feed (``GET /v1/events``) that the Kubernetes controller and the extender's node
  cache follow; ``seq`` orders it, ``event_id`` is the receivers' idempotency key.
- ``webhook_cursors``: per configured receiver, the last event delivered, the retry state and a
  short lease, so exactly one worker of one instance delivers to a receiver at a time.
- ``ear_signing_keys``: the EAR signing keys when they are kept in the database (several
  instances); a retired key stays published in the JWKS until its tokens have expired.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_events",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("node", sa.String(length=253), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("event_id"),
        sqlite_autoincrement=True,  # a seq is never reused, even after pruning
    )
    op.create_index("ix_cluster_events_created_at", "cluster_events", ["created_at"])
    op.create_table(
        "webhook_cursors",
        sa.Column("receiver", sa.String(length=200), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("locked_by", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("receiver"),
    )
    op.create_table(
        "ear_signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("private_pem", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("retired_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("kid"),
    )


def downgrade() -> None:
    op.drop_table("ear_signing_keys")
    op.drop_table("webhook_cursors")
    op.drop_index("ix_cluster_events_created_at", table_name="cluster_events")
    op.drop_table("cluster_events")
