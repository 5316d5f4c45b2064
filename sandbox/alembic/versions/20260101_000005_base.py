"""Phase 1 schema: plaintext owner_api_key on sessions and assistants.

Revision ID: 20260101_000005
"""

from alembic import op

revision = "20260101_000005"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in DDL.split(";"):
        if statement.strip():
            op.execute(statement)


DDL = """
        CREATE TABLE sessions (
            id uuid PRIMARY KEY,
            created_at timestamp NOT NULL DEFAULT now(),
            updated_at timestamp NOT NULL DEFAULT now(),
            status varchar(20) NOT NULL DEFAULT 'active',
            model varchar(50) NOT NULL,
            working_directory text,
            total_turns integer NOT NULL DEFAULT 0,
            total_cost_usd double precision,
            parent_session_id uuid REFERENCES sessions(id),
            metadata jsonb,
            owner_api_key varchar(255)
        );
        CREATE INDEX idx_sessions_owner_api_key ON sessions (owner_api_key);
        CREATE TABLE session_messages (
            id bigserial PRIMARY KEY,
            session_id uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            role varchar(20) NOT NULL,
            content jsonb,
            created_at timestamp NOT NULL DEFAULT now()
        );
        CREATE TABLE checkpoints (
            id uuid PRIMARY KEY,
            session_id uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            user_message_uuid varchar(100),
            files_modified jsonb,
            created_at timestamp NOT NULL DEFAULT now()
        );
        CREATE TABLE assistants (
            id varchar(64) PRIMARY KEY,
            model varchar(50) NOT NULL,
            name varchar(256),
            description text,
            instructions text,
            tools jsonb,
            metadata jsonb,
            temperature double precision,
            top_p double precision,
            response_format jsonb,
            owner_api_key varchar(255),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX idx_assistants_owner_api_key ON assistants (owner_api_key);
"""


def downgrade() -> None:
    for table in ("assistants", "checkpoints", "session_messages", "sessions"):
        op.execute(f"DROP TABLE {table}")
