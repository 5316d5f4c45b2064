"""Phase 2: add owner_api_key_hash beside the plaintext key and backfill it.

Revision ID: 20260201_000006
"""

from alembic import op

revision = "20260201_000006"
down_revision = "20260101_000005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("sessions", "assistants"):
        op.execute(f"ALTER TABLE {table} ADD COLUMN owner_api_key_hash varchar(64)")
        op.execute(f"UPDATE {table} SET owner_api_key_hash ="
                   " encode(sha256(owner_api_key::bytea), 'hex') WHERE owner_api_key IS NOT NULL")
        op.execute(f"CREATE INDEX idx_{table}_owner_api_key_hash ON {table} (owner_api_key_hash)")


def downgrade() -> None:
    for table in ("sessions", "assistants"):
        op.execute(f"DROP INDEX idx_{table}_owner_api_key_hash")
        op.execute(f"ALTER TABLE {table} DROP COLUMN owner_api_key_hash")
