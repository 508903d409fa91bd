"""runtime re-appraisal jobs: a runtime policy's status change re-appraises in batches too

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

- ``reappraisal_jobs.kind``: ``golden`` (a golden set's retire or revoke, every job before this
  revision) or ``runtime`` (a runtime policy's activation, retirement or revocation), which says
  whether ``golden_name`` is matched against the golden or the runtime assignments.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "reappraisal_jobs",
        sa.Column("kind", sa.String(16), nullable=False, server_default="golden"),
    )


def downgrade() -> None:
    op.drop_column("reappraisal_jobs", "kind")
