"""A key rotation belongs to the target, not to a run: the rotation a run continues
(rollback_runs.rotation_id) and the rotations that are over (closed_rotations).

The rotations of runs whose step 5 is already done are closed here, so that no new run
continues a finished rollback's rotation; any other rotation stays open and the next run
continues it.

Revision ID: 0002_adopt
Revises: 0002_follow_ups
Create Date: 2026-12-03 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_adopt"
down_revision: str | Sequence[str] | None = "0002_follow_ups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("rollback_runs", sa.Column("rotation_id", sa.UUID(), nullable=True))
    op.create_foreign_key(op.f("fk_rollback_runs_rotation_id_rollback_runs"), "rollback_runs",
                          "rollback_runs", ["rotation_id"], ["id"])
    op.create_table(
        "closed_rotations",
        sa.Column("rotation_id", sa.UUID(), nullable=False),
        sa.Column("closed_in_run", sa.UUID(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("facts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["rotation_id"], ["rollback_runs.id"],
            name=op.f("fk_closed_rotations_rotation_id_rollback_runs"),
        ),
        sa.ForeignKeyConstraint(
            ["closed_in_run"], ["rollback_runs.id"],
            name=op.f("fk_closed_rotations_closed_in_run_rollback_runs"),
        ),
        sa.PrimaryKeyConstraint("rotation_id", name=op.f("pk_closed_rotations")),
    )
    op.execute("""
        INSERT INTO closed_rotations (rotation_id, closed_in_run, facts)
        SELECT DISTINCT run_id, run_id, '{"closed_by": "migration 0002_adopt"}'::jsonb
          FROM step_executions
         WHERE step = 'email_clients' AND status IN ('succeeded', 'already_done')
    """)


def downgrade() -> None:
    op.drop_table("closed_rotations")
    op.drop_constraint(op.f("fk_rollback_runs_rotation_id_rollback_runs"), "rollback_runs",
                       type_="foreignkey")
    op.drop_column("rollback_runs", "rotation_id")
