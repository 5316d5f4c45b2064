"""Phase 3: drop the plaintext keys. Downgrade brings the column back, empty (LOSSY).

Revision ID: 20260208_000007
"""

from alembic import op

revision = "20260208_000007"
down_revision = "20260201_000006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("sessions", "assistants"):
        op.execute(f"DROP INDEX idx_{table}_owner_api_key")
        op.execute(f"ALTER TABLE {table} DROP COLUMN owner_api_key")


def downgrade() -> None:
    for table in ("sessions", "assistants"):
        op.execute(f"ALTER TABLE {table} ADD COLUMN owner_api_key varchar(255)")
        op.execute(f"CREATE INDEX idx_{table}_owner_api_key ON {table} (owner_api_key)")
