"""Many targets, one bot: every run, step execution, ledger row and closed rotation records the
target it belongs to, and "one active rollback" becomes one per target.

Existing rows move to the target `default` (the single-target settings of before). A run's
rows take its target in the database (a trigger copies `rollback_runs.target` into each row
that names the run), so no code path can file a step or a ledger row under another target.
The downgrade refuses while any row belongs to another target: it would merge their rotations.

Revision ID: 0005_targets
Revises: 0003_event_chain
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_targets"
down_revision: str | Sequence[str] | None = "0003_event_chain"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> the column naming the run whose target the row takes
CHILDREN = {"step_executions": "run_id", "notifications": "run_id",
            "key_rotations": "run_id", "closed_rotations": "rotation_id"}


def upgrade() -> None:
    for table in ("rollback_runs", *CHILDREN):
        op.add_column(table, sa.Column("target", sa.String(length=32),
                                       server_default=sa.text("'default'"), nullable=False))
    for table, column in CHILDREN.items():
        op.execute(f"""
            CREATE FUNCTION rb_{table}_target() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                SELECT target INTO NEW.target FROM rollback_runs WHERE id = NEW.{column};
                RETURN NEW;
            END $$""")
        op.execute(f"CREATE TRIGGER rb_{table}_target BEFORE INSERT OR UPDATE OF {column} "
                   f"ON {table} FOR EACH ROW EXECUTE FUNCTION rb_{table}_target()")
    op.drop_index("uq_rollback_runs_one_active", table_name="rollback_runs")
    op.create_index("uq_rollback_runs_one_active", "rollback_runs", ["target"], unique=True,
                    postgresql_where=sa.text("status = 'active'"))
    op.create_index(op.f("ix_rollback_runs_target_created_at"), "rollback_runs",
                    ["target", "created_at"])


def downgrade() -> None:
    op.execute("""
        DO $$ BEGIN
            IF EXISTS (SELECT 1 FROM rollback_runs WHERE target <> 'default') THEN
                RAISE EXCEPTION 'runs of targets other than default exist: downgrading would '
                    'merge their rotations (delete them first, or stay on 0005_targets)';
            END IF;
        END $$""")
    op.drop_index(op.f("ix_rollback_runs_target_created_at"), table_name="rollback_runs")
    op.drop_index("uq_rollback_runs_one_active", table_name="rollback_runs")
    op.create_index("uq_rollback_runs_one_active", "rollback_runs", ["status"], unique=True,
                    postgresql_where=sa.text("status = 'active'"))
    for table in CHILDREN:
        op.execute(f"DROP TRIGGER rb_{table}_target ON {table}")
        op.execute(f"DROP FUNCTION rb_{table}_target()")
    for table in ("rollback_runs", *CHILDREN):
        op.drop_column(table, "target")
