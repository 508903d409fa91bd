"""node identity: one EK per node, operator labels on tokens, activation bound to its client

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

- ``nodes.ek_fingerprint`` becomes unique: one TPM is one node, enforced by the database so two
  verifier instances activating the same EK under two names cannot both succeed. The upgrade
  fails on a database that already holds one EK under two names (list them with
  ``SELECT ek_fingerprint, count(*) FROM nodes GROUP BY 1 HAVING count(*) > 1``, delete or move).
- ``tokens.labels``: the labels an enrollment token gives the nodes it enrolls (operator-chosen).
- ``enrollments.activation_key_sha256``: the hash of the key only the enrolling client received;
  NULL for challenges started before this revision, which therefore can no longer be activated.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nodes_ek_fingerprint"))
        batch_op.create_index(
            batch_op.f("ix_nodes_ek_fingerprint"), ["ek_fingerprint"], unique=True
        )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("labels", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("activation_key_sha256", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_column("activation_key_sha256")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("labels")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nodes_ek_fingerprint"))
        batch_op.create_index(
            batch_op.f("ix_nodes_ek_fingerprint"), ["ek_fingerprint"], unique=False
        )
