"""the review console: sessions, incidents with triage, four-eyes golden drafts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

- ``console_sessions``: server-side sessions of the web console (the cookie carries a random
  secret, the table its SHA-256), each bound to the token it was opened with.
- ``incidents``, ``incident_nodes``, ``incident_notes``: failing checks grouped across nodes by
  (check, got-value), with triage state, assignee and notes; ``console_markers`` holds the last
  attestation id grouped so far.
- ``golden_drafts``: golden versions drafted from a reviewed attestation, active only once a
  second person approves.
Only new tables: nothing existing changes, and the downgrade drops them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_console_sessions_token_id"), ["token_id"])
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("check_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("got", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("assignee", sa.String(length=200), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_incidents_state"), ["state"])
        batch_op.create_index(batch_op.f("ix_incidents_last_seen"), ["last_seen"])
    op.create_table(
        "incident_nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("attestation_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.Integer(), nullable=True),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("incident_id", "node_id", name="uq_incident_node"),
    )
    with op.batch_alter_table("incident_nodes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_incident_nodes_incident_id"), ["incident_id"])
        batch_op.create_index(batch_op.f("ix_incident_nodes_node_id"), ["node_id"])
    op.create_table(
        "incident_notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("incident_notes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_incident_notes_incident_id"), ["incident_id"])
    op.create_table(
        "console_markers",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "golden_drafts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("golden_name", sa.String(length=200), nullable=False),
        sa.Column("base_version", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("source", sa.LargeBinary(), nullable=False),
        sa.Column("attestation_id", sa.Integer(), nullable=False),
        sa.Column("node_name", sa.String(length=253), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("measurements", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("drafted_by", sa.String(length=200), nullable=False),
        sa.Column("drafted_token", sa.String(length=32), nullable=False),
        sa.Column("drafted_at", sa.DateTime(), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("golden_drafts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_golden_drafts_golden_name"), ["golden_name"])
        batch_op.create_index(batch_op.f("ix_golden_drafts_state"), ["state"])


def downgrade() -> None:
    for table in (
        "golden_drafts",
        "console_markers",
        "incident_notes",
        "incident_nodes",
        "incidents",
        "console_sessions",
    ):
        op.drop_table(table)
