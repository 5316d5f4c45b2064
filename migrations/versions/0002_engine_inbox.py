"""The engine's inbox: clicks recorded before Slack is told OK.

Revision ID: 0002_engine_inbox
Revises: 0001_bot_schema
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_engine_inbox"
down_revision: str | Sequence[str] | None = "0001_bot_schema"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "engine_inbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("execution_id", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.CheckConstraint("action IN ('approve', 'retry', 'abort', 'reject')",
                           name=op.f("ck_engine_inbox_action")),
        sa.CheckConstraint("source IN ('slack', 'terminal', 'bot')",
                           name=op.f("ck_engine_inbox_source")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engine_inbox")),
    )
    op.create_index("ix_engine_inbox_unprocessed", "engine_inbox", ["id"], unique=False,
                    postgresql_where=sa.text("processed_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_engine_inbox_unprocessed", table_name="engine_inbox",
                  postgresql_where=sa.text("processed_at IS NULL"))
    op.drop_table("engine_inbox")
