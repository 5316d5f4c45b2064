"""One thread writer per run (a lease in database time), and what Slack refused.

Revision ID: 0002_mirror_claims
Revises: 0001_bot_schema
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_mirror_claims"
down_revision: str | Sequence[str] | None = "0001_bot_schema"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mirror_claims",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["rollback_runs.id"],
                                name=op.f("fk_mirror_claims_run_id_rollback_runs")),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_mirror_claims")),
    )
    op.create_table(
        "slack_refusals",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("error", sa.String(length=64), nullable=False),
        sa.Column("what", sa.Text(), nullable=False),
        sa.Column("handled", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["rollback_runs.id"],
                                name=op.f("fk_slack_refusals_run_id_rollback_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slack_refusals")),
    )
    op.create_index("ix_slack_refusals_run_id", "slack_refusals", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_slack_refusals_run_id", table_name="slack_refusals")
    op.drop_table("slack_refusals")
    op.drop_table("mirror_claims")
