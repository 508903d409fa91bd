"""fleet scale: content-addressed verdicts, compact re-attestations, cache versions, job leases

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

- ``verdicts``: verdict documents stored once under the SHA-256 of their canonical JSON
  (zlib-compressed); new attestations refer to one by ``attestations.verdict_sha256`` and leave
  ``attestations.verdict`` NULL (rows written before keep theirs there, and read the same).
- ``attestation_repeats``: an unchanged re-attestation within a boot (same log, PCRs, golden
  rows) updates one row per full attestation — count, first/last time, last quote — instead of
  adding a full record.
- ``nodes.verdict_key`` / ``nodes.last_clock``: what the node's last verdict was computed from,
  and the TPM clock of its last quote (a verdict is reused only while the clock advances).
- ``store_versions``: counters bumped with golden-set changes, so every instance's caches are
  invalidated by version, not by time.
- ``leases`` and ``reappraisal_jobs``: background jobs (stale sweep, retention, blob GC, batched
  re-appraisal) run in one instance at a time and resume in another after a crash.
- ``ix_nonces_expires_at``: used nonces are purged by expiry in batches; indexes on the log
  digests (``attestations.event_log_sha256``, ``nodes.boot_log_sha256``) for the blob GC;
  ``ix_nodes_state_name`` for inventory pages of one state in name order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "verdicts",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "attestation_repeats",
        sa.Column("attestation_id", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(), nullable=False),
        sa.Column("last_at", sa.DateTime(), nullable=False),
        sa.Column("last_nonce", sa.LargeBinary(), nullable=False),
        sa.Column("last_quote", sa.LargeBinary(), nullable=False),
        sa.Column("last_signature", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["attestation_id"], ["attestations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("attestation_id"),
    )
    op.create_table(
        "store_versions",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "reappraisal_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("golden_name", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reappraisal_jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reappraisal_jobs_finished_at"), ["finished_at"], unique=False
        )
    with op.batch_alter_table("attestations", schema=None) as batch_op:
        batch_op.alter_column("verdict", existing_type=sa.JSON(), nullable=True)
        batch_op.add_column(sa.Column("verdict_sha256", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_attestations_verdict_sha256"), ["verdict_sha256"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_attestations_event_log_sha256"), ["event_log_sha256"], unique=False
        )
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verdict_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("last_clock", sa.BigInteger(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_nodes_boot_log_sha256"), ["boot_log_sha256"], unique=False
        )
        batch_op.create_index("ix_nodes_state_name", ["state", "name"], unique=False)
    with op.batch_alter_table("nonces", schema=None) as batch_op:
        batch_op.create_index("ix_nonces_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("nonces", schema=None) as batch_op:
        batch_op.drop_index("ix_nonces_expires_at")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index("ix_nodes_state_name")
        batch_op.drop_index(batch_op.f("ix_nodes_boot_log_sha256"))
        batch_op.drop_column("last_clock")
        batch_op.drop_column("verdict_key")
    with op.batch_alter_table("attestations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attestations_event_log_sha256"))
        batch_op.drop_index(batch_op.f("ix_attestations_verdict_sha256"))
        batch_op.drop_column("verdict_sha256")
    for table in (
        "reappraisal_jobs",
        "leases",
        "store_versions",
        "attestation_repeats",
        "verdicts",
    ):
        op.drop_table(table)
