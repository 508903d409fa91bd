"""staged rollouts: the golden versions a node booted, and canary versions

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

- ``nodes.booted_versions``: the golden set versions (``name@version``) whose values the node's
  last appraisal matched — which version of each set the node actually booted, read from its
  verified log, never from its labels. Empty until the node's next appraisal.
- ``golden_sets.canary``: a label selector limiting one version to some of the nodes its set is
  assigned to (a canary during a rollout); NULL for every node the set applies to.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(
            sa.Column("booted_versions", sa.JSON(), nullable=False, server_default="[]")
        )
    with op.batch_alter_table("golden_sets") as batch:
        batch.add_column(sa.Column("canary", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("golden_sets") as batch:
        batch.drop_column("canary")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("booted_versions")
