"""The engine's inbox: clicks recorded before Slack is told OK.

Revision ID: 0002_engine_inbox
Revises: 0001_bot_schema
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_engine_inbox"
down_revision: str | Sequence[str] | None = "0002_mirror_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


OLD_KINDS = ("run_started", "plan_shown", "approval_given", "approvals_voided", "refused",
             "step_started", "step_output", "step_succeeded", "step_already_done", "step_failed",
             "step_interrupted", "step_rejected", "retry_requested", "run_aborted",
             "run_completed")
NEW_KINDS = (*OLD_KINDS, "taken_over")


def _kinds(kinds: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_incident_events_kind"), "incident_events", type_="check")
    listed = ", ".join(f"'{kind}'" for kind in kinds)
    op.create_check_constraint(op.f("ck_incident_events_kind"), "incident_events",
                               f"kind IN ({listed})")


def upgrade() -> None:
    _kinds(NEW_KINDS)  # the break-glass take-over is an incident event
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
    _kinds(OLD_KINDS)
