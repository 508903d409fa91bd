"""stateless challenge nonces: a shared key table; the nonces table keeps used nonces only

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

- ``service_keys``: secrets every verifier instance shares, created by the first that needs one.
  The ``nonce`` key encrypts and authenticates challenge nonces, so an outstanding nonce is not
  stored anywhere and an unauthenticated caller cannot use up a node's challenges.
- ``nonces`` rows are from now on only nonces already used (until they expire). Outstanding
  nonces issued before this revision are deleted: agents holding one are refused once
  (``nonce_unknown``) and ask for a new challenge.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "service_keys",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.execute(sa.text("DELETE FROM nonces WHERE used_at IS NULL"))


def downgrade() -> None:
    op.drop_table("service_keys")
