"""Follow-through: post-rollback actions (follow_ups), deliveries of log entries to PagerDuty
and the thread (event_deliveries), and the incident log's new kinds of entries.

Revision ID: 0002_follow_ups
Revises: 0001_bot_schema
Create Date: 2026-11-26 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_follow_ups"
down_revision: str | Sequence[str] | None = "0002_engine_inbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = ("run_started", "plan_shown", "approval_given", "approvals_voided", "refused",
             "step_started", "step_output", "step_succeeded", "step_already_done", "step_failed",
             "step_interrupted", "step_rejected", "retry_requested", "run_aborted",
             "run_completed", "taken_over")
NEW_KINDS = ("page_sent", "page_failed", "approval_reminded", "approval_overdue",
             "approval_expired", "quorum_unreachable", "escalated", "follow_up_owned",
             "follow_up_done")


def _kinds_check(kinds: Sequence[str]) -> None:
    op.drop_constraint(op.f("ck_incident_events_kind"), "incident_events", type_="check")
    values = ", ".join(f"'{kind}'" for kind in kinds)
    op.create_check_constraint(op.f("ck_incident_events_kind"), "incident_events",
                               f"kind IN ({values})")


def upgrade() -> None:
    _kinds_check(OLD_KINDS + NEW_KINDS)
    op.create_table(
        "follow_ups",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("item", sa.String(length=32), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=True),
        sa.Column("owner_name", sa.String(length=255), nullable=True),
        sa.Column("owned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_by_id", sa.String(length=64), nullable=True),
        sa.Column("done_by_name", sa.String(length=255), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "item IN ('root_cause', 'fix_issues', 'staging_tests', 'gradual_rollout', "
            "'auth_monitoring')", name=op.f("ck_follow_ups_item"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["rollback_runs.id"], name=op.f("fk_follow_ups_run_id_rollback_runs")
        ),
        sa.PrimaryKeyConstraint("run_id", "item", name=op.f("pk_follow_ups")),
    )
    op.create_table(
        "event_deliveries",
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.CheckConstraint("target IN ('pagerduty', 'slack')",
                           name=op.f("ck_event_deliveries_target")),
        sa.ForeignKeyConstraint(
            ["event_id"], ["incident_events.id"],
            name=op.f("fk_event_deliveries_event_id_incident_events"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["rollback_runs.id"],
            name=op.f("fk_event_deliveries_run_id_rollback_runs"),
        ),
        sa.PrimaryKeyConstraint("event_id", "target", name=op.f("pk_event_deliveries")),
    )
    op.create_index(op.f("ix_event_deliveries_run_id"), "event_deliveries", ["run_id"],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_event_deliveries_run_id"), table_name="event_deliveries")
    op.drop_table("event_deliveries")
    op.drop_table("follow_ups")
    _kinds_check(OLD_KINDS)
