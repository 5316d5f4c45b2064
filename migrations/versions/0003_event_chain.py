"""A tamper-evident incident log: every event carries the hash of the one before it in its run.

The database computes the chain, not the replicas: a BEFORE INSERT trigger locks the run's row
in `incident_chain_heads` (FOR UPDATE), numbers the event (`seq`), takes its `id` under that
lock (so a run's ids follow its chain order even when two replicas write at once) and stores
`prev_hash` and `hash` = SHA-256 over `incident_event_encoding(...)`, PostgreSQL's built-in
sha256() (no pgcrypto). `bot/domain/log_chain.py` computes the same encoding in Python;
`rollback-bot verify-log` recomputes the chain from the rows. Events written before this
migration are chained here, in their id order.

Revision ID: 0003_event_chain
Revises: 0002_resend
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_event_chain"
down_revision: str | Sequence[str] | None = "0002_resend"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64

# Each field is "<bytes>:<text>" and a NULL step is "-": no two different events encode alike.
# The version line names the encoding, should it ever change.
ENCODING_FUNCTION = r"""
CREATE FUNCTION incident_event_encoding(
    prev_hash text, seq bigint, id bigint, run_id uuid, at timestamptz, actor text,
    source text, kind text, step text, data jsonb
) RETURNS text AS $$
    SELECT concat_ws(E'\n',
        'rollback-bot incident event v1', prev_hash, seq::text, id::text, run_id::text,
        to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        octet_length(actor) || ':' || actor,
        octet_length(source) || ':' || source,
        octet_length(kind) || ':' || kind,
        CASE WHEN step IS NULL THEN '-' ELSE octet_length(step) || ':' || step END,
        octet_length(data::text) || ':' || data::text)
$$ LANGUAGE sql STABLE
"""

HASH_FUNCTION = """
CREATE FUNCTION incident_event_hash(
    prev_hash text, seq bigint, id bigint, run_id uuid, at timestamptz, actor text,
    source text, kind text, step text, data jsonb
) RETURNS text AS $$
    SELECT encode(sha256(convert_to(incident_event_encoding(
        prev_hash, seq, id, run_id, at, actor, source, kind, step, data), 'UTF8')), 'hex')
$$ LANGUAGE sql STABLE
"""

CHAIN_FUNCTION = f"""
CREATE FUNCTION incident_events_chain() RETURNS trigger AS $$
DECLARE
    head incident_chain_heads%ROWTYPE;
BEGIN
    INSERT INTO incident_chain_heads (run_id, seq, head_hash)
        VALUES (NEW.run_id, 0, '{GENESIS}') ON CONFLICT (run_id) DO NOTHING;
    SELECT * INTO head FROM incident_chain_heads WHERE run_id = NEW.run_id FOR UPDATE;
    -- The id is taken under the run's lock: within a run, id order is chain order.
    NEW.id := nextval(pg_get_serial_sequence('incident_events', 'id'));
    NEW.seq := head.seq + 1;
    NEW.prev_hash := head.head_hash;
    NEW.hash := incident_event_hash(NEW.prev_hash, NEW.seq, NEW.id, NEW.run_id, NEW.at,
                                    NEW.actor, NEW.source, NEW.kind, NEW.step, NEW.data);
    UPDATE incident_chain_heads SET seq = NEW.seq, head_hash = NEW.hash, updated_at = now()
        WHERE run_id = NEW.run_id;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql
"""

BACKFILL = f"""
DO $$
DECLARE
    event record;
    current_run uuid;
    previous text;
    n bigint;
    digest text;
BEGIN
    FOR event IN SELECT * FROM incident_events ORDER BY run_id, id LOOP
        IF current_run IS DISTINCT FROM event.run_id THEN
            current_run := event.run_id;
            previous := '{GENESIS}';
            n := 0;
        END IF;
        n := n + 1;
        digest := incident_event_hash(previous, n, event.id, event.run_id, event.at,
                                      event.actor, event.source, event.kind, event.step,
                                      event.data);
        UPDATE incident_events SET seq = n, prev_hash = previous, hash = digest
            WHERE id = event.id;
        previous := digest;
    END LOOP;
    INSERT INTO incident_chain_heads (run_id, seq, head_hash)
        SELECT DISTINCT ON (run_id) run_id, seq, hash FROM incident_events
        ORDER BY run_id, seq DESC;
END;
$$
"""


def upgrade() -> None:
    op.create_table(
        "incident_chain_heads",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("updated_at", postgresql.TIMESTAMP(timezone=True),
                  server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["rollback_runs.id"],
                                name=op.f("fk_incident_chain_heads_run_id_rollback_runs")),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_incident_chain_heads")),
    )
    op.add_column("incident_events", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.add_column("incident_events", sa.Column("prev_hash", sa.String(length=64), nullable=True))
    op.add_column("incident_events", sa.Column("hash", sa.String(length=64), nullable=True))
    op.execute(ENCODING_FUNCTION)
    op.execute(HASH_FUNCTION)
    op.execute("ALTER TABLE incident_events DISABLE TRIGGER incident_events_append_only")
    op.execute(BACKFILL)
    op.execute("ALTER TABLE incident_events ENABLE TRIGGER incident_events_append_only")
    for column in ("seq", "prev_hash", "hash"):
        op.alter_column("incident_events", column, nullable=False)
    op.create_unique_constraint(op.f("uq_incident_events_run_id"), "incident_events",
                                ["run_id", "seq"])
    op.execute(CHAIN_FUNCTION)
    op.execute("CREATE TRIGGER incident_events_chain BEFORE INSERT ON incident_events "
                "FOR EACH ROW EXECUTE FUNCTION incident_events_chain()")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS incident_events_chain ON incident_events")
    op.execute("DROP FUNCTION IF EXISTS incident_events_chain()")
    op.drop_constraint(op.f("uq_incident_events_run_id"), "incident_events", type_="unique")
    for column in ("hash", "prev_hash", "seq"):
        op.drop_column("incident_events", column)
    op.execute("DROP FUNCTION IF EXISTS incident_event_hash(text, bigint, bigint, uuid, "
               "timestamptz, text, text, text, text, jsonb)")
    op.execute("DROP FUNCTION IF EXISTS incident_event_encoding(text, bigint, bigint, uuid, "
               "timestamptz, text, text, text, text, jsonb)")
    op.drop_table("incident_chain_heads")
