"""timestamp -> timestamptz on sessions, session_messages, checkpoints.

Revision ID: 9ddfdd63af30
"""

from alembic import op

revision = "9ddfdd63af30"
down_revision = "0c6d1a600bb1"
branch_labels = None
depends_on = None

COLUMNS = {"sessions": ("created_at", "updated_at"), "session_messages": ("created_at",),
           "checkpoints": ("created_at",)}


def upgrade() -> None:
    for table, columns in COLUMNS.items():
        for column in columns:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE timestamptz")


def downgrade() -> None:
    for table, columns in COLUMNS.items():
        for column in columns:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE timestamp")
