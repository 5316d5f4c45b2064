"""Rename the metadata columns (they clash with SQLAlchemy's declarative `metadata`).

Revision ID: 0c6d1a600bb1
"""

from alembic import op

revision = "0c6d1a600bb1"
down_revision = "20260208_000007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE sessions RENAME COLUMN metadata TO session_metadata")
    op.execute("ALTER TABLE assistants RENAME COLUMN metadata TO assistant_metadata")


def downgrade() -> None:
    op.execute("ALTER TABLE sessions RENAME COLUMN session_metadata TO metadata")
    op.execute("ALTER TABLE assistants RENAME COLUMN assistant_metadata TO metadata")
