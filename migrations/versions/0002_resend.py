"""Resending unconfirmed emails: a run may end `completed_unconfirmed`, a step execution may be
a `resend` of step 5, a click may be a Resend, and the incident log has the resend's entries.

Revision ID: 0002_resend
Revises: 0002_follow_ups
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_resend"
down_revision: str | Sequence[str] | None = "0002_adopt"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = ("run_started", "plan_shown", "approval_given", "approvals_voided", "refused",
             "step_started", "step_output", "step_succeeded", "step_already_done", "step_failed",
             "step_interrupted", "step_rejected", "retry_requested", "run_aborted",
             "run_completed", "taken_over", "page_sent", "page_failed", "approval_reminded",
             "approval_overdue", "approval_expired", "quorum_unreachable", "escalated",
             "follow_up_owned", "follow_up_done")
NEW_KINDS = ("resend_started", "resend_finished", "deliveries_confirmed")
OLD_RUN_STATUSES = ("active", "completed", "aborted")
OLD_ACTIONS = ("approve", "retry", "abort", "reject")


def _check(table: str, name: str, column: str, values: Sequence[str]) -> None:
    op.drop_constraint(op.f(f"ck_{table}_{name}"), table, type_="check")
    listed = ", ".join(f"'{value}'" for value in values)
    op.create_check_constraint(op.f(f"ck_{table}_{name}"), table, f"{column} IN ({listed})")


def upgrade() -> None:
    _check("incident_events", "kind", "kind", OLD_KINDS + NEW_KINDS)
    op.alter_column("rollback_runs", "status", type_=sa.String(length=32),
                    existing_type=sa.String(length=16), existing_nullable=False)
    _check("rollback_runs", "status", "status",
           ("active", "completed", "completed_unconfirmed", "aborted"))
    _check("engine_inbox", "action", "action", (*OLD_ACTIONS, "resend"))
    op.add_column("step_executions", sa.Column("kind", sa.String(length=16),
                                               server_default=sa.text("'step'"),
                                               nullable=False))
    op.create_check_constraint(op.f("ck_step_executions_kind"), "step_executions",
                               "kind IN ('step', 'resend')")
    # A resend's attempts are counted apart from the step's own.
    op.drop_constraint("uq_step_executions_attempt", "step_executions", type_="unique")
    op.create_unique_constraint("uq_step_executions_attempt", "step_executions",
                                ["run_id", "step", "kind", "attempt"])


def downgrade() -> None:
    op.execute("DELETE FROM approvals WHERE step_execution_id IN "
               "(SELECT id FROM step_executions WHERE kind = 'resend')")
    op.execute("DELETE FROM step_executions WHERE kind = 'resend'")
    op.drop_constraint("uq_step_executions_attempt", "step_executions", type_="unique")
    op.create_unique_constraint("uq_step_executions_attempt", "step_executions",
                                ["run_id", "step", "attempt"])
    op.drop_constraint(op.f("ck_step_executions_kind"), "step_executions", type_="check")
    op.drop_column("step_executions", "kind")
    op.execute("DELETE FROM engine_inbox WHERE action = 'resend'")
    _check("engine_inbox", "action", "action", OLD_ACTIONS)
    op.execute("UPDATE rollback_runs SET status = 'completed' "
               "WHERE status = 'completed_unconfirmed'")
    _check("rollback_runs", "status", "status", OLD_RUN_STATUSES)
    op.alter_column("rollback_runs", "status", type_=sa.String(length=16),
                    existing_type=sa.String(length=32), existing_nullable=False)
    # The log is append-only: a database that recorded a resend keeps it and cannot go back.
    _check("incident_events", "kind", "kind", OLD_KINDS)
