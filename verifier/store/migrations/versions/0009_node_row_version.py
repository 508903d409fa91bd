"""node row versions: what lets an instance keep a node's snapshot between its attestations

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

- ``nodes.row_version``: bumped by the database itself (a trigger on both dialects) with every
  UPDATE that sets any column but the three an unchanged re-attestation refreshes
  (``last_attested_at``, ``last_success_at``, ``last_clock``). An instance that kept a node's
  snapshot (its AK, labels, state, last verdict) writes a re-attestation only where the row still
  has the version it kept, so no writer can forget to invalidate it. New rows start at a random
  value (``models.new_row_version``), so a name enrolled again under a reused id never matches
  an old snapshot; rows that exist start at 1.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

REFRESHED = ("last_attested_at", "last_success_at", "last_clock")
"""What ``hotpath``'s refresh of an unchanged node sets: the only columns that keep the version."""

VERSIONED = (
    "id", "name", "ek_public", "ek_fingerprint", "ek_cert_fingerprint", "ak_public", "ak_name",
    "labels", "state", "state_since", "reason", "replace_allowed", "last_attestation_id",
    "last_reset_count", "last_restart_count", "last_reboot_at", "boot_log_sha256",
    "golden_versions", "booted_versions", "enrolled_at", "verdict_key",
)  # fmt: skip
"""Every other column of ``nodes`` (``tests/test_store.py`` holds this list to the table)."""


def upgrade() -> None:
    op.add_column(
        "nodes", sa.Column("row_version", sa.BigInteger(), nullable=False, server_default="1")
    )
    columns = ", ".join(VERSIONED)
    if _pg():
        op.execute(
            "CREATE FUNCTION nodes_bump_row_version() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN NEW.row_version := OLD.row_version + 1; RETURN NEW; END $$"
        )
        op.execute(
            f"CREATE TRIGGER nodes_row_version BEFORE UPDATE OF {columns} ON nodes "
            "FOR EACH ROW EXECUTE FUNCTION nodes_bump_row_version()"
        )
    else:
        op.execute(
            f"CREATE TRIGGER nodes_row_version AFTER UPDATE OF {columns} ON nodes "  # noqa: S608
            "FOR EACH ROW BEGIN "
            "UPDATE nodes SET row_version = OLD.row_version + 1 WHERE id = NEW.id; END"
        )


def downgrade() -> None:
    op.execute("DROP TRIGGER nodes_row_version" + (" ON nodes" if _pg() else ""))
    if _pg():
        op.execute("DROP FUNCTION nodes_bump_row_version()")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("row_version")


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"
