"""Every SQL statement run on the TARGET database, each under a name that says what it asks.

The service's schema (`sessions`, `assistants`, `alembic_version`) is not ours: when it changes,
this is the one module to read and fix. Statements are plain strings for asyncpg (`$1`
placeholders); a statement built around a table name is a small function of that name.
Step 4's own statements (work table, page ranges) live here too, under the same rule.
"""

from __future__ import annotations

# --- the server ---------------------------------------------------------------------------

SERVER_VERSION_NUM_SQL = "SHOW server_version_num"
DATABASE_SIZE_SQL = "SELECT pg_database_size(current_database())"

# --- the service's Alembic history --------------------------------------------------------

ALEMBIC_TABLE_EXISTS_SQL = "SELECT to_regclass('alembic_version') IS NOT NULL"
ALEMBIC_REVISIONS_SQL = "SELECT version_num FROM alembic_version"

# $1 table, $2 column, in the connection's current schema.
COLUMN_EXISTS_SQL = """
    SELECT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name = $1
                      AND column_name = $2)
"""

# --- privileges -----------------------------------------------------------------------------

# $1 the work schema. May this user create it, or create in it when it already exists?
WORK_SCHEMA_PRIVILEGE_SQL = """
    SELECT current_user AS user_name, current_database() AS database_name,
           has_database_privilege(current_database(), 'CREATE')
           OR EXISTS (SELECT 1 FROM pg_namespace
                       WHERE nspname = $1 AND has_schema_privilege(oid, 'CREATE')) AS allowed
"""

# --- clients: the owners of sessions and assistants ---------------------------------------

# Every distinct hash that owns a row: the clients (before step 4, by their OLD hash).
OWNER_HASHES_SQL = """
    SELECT owner_api_key_hash AS hash FROM sessions WHERE owner_api_key_hash IS NOT NULL
    UNION
    SELECT owner_api_key_hash FROM assistants WHERE owner_api_key_hash IS NOT NULL
"""

# $1 new hashes -> (hash, key): a client's key, read from whichever row holds it (all agree).
KEYS_BY_NEW_HASH_SQL = """
    SELECT DISTINCT ON (hash) hash, key FROM (
        SELECT owner_api_key_hash AS hash, owner_api_key AS key FROM sessions
         WHERE owner_api_key_hash = ANY($1) AND owner_api_key IS NOT NULL
        UNION ALL
        SELECT owner_api_key_hash, owner_api_key FROM assistants
         WHERE owner_api_key_hash = ANY($1) AND owner_api_key IS NOT NULL
    ) keyed ORDER BY hash
"""

# $1 a new hash -> the key of that hash, read from whichever row holds it.
KEY_OF_HASH_SQL = """
    (SELECT owner_api_key FROM sessions WHERE owner_api_key_hash = $1
       AND owner_api_key IS NOT NULL LIMIT 1)
    UNION ALL
    (SELECT owner_api_key FROM assistants WHERE owner_api_key_hash = $1
       AND owner_api_key IS NOT NULL LIMIT 1)
    LIMIT 1
"""


def rekey_late_rows_sql(table: str) -> str:
    """$1 the door key's old hash, $2 its new hash: rows of `table` still under the old hash
    take the new key of a row already re-keyed (the key never leaves the database); none are
    touched if no row holds the new key."""
    return f"""
        WITH door AS (SELECT key FROM ({KEY_OF_HASH_SQL.replace("$1", "$2")}) AS k(key))
        UPDATE {table} AS t SET owner_api_key = door.key, owner_api_key_hash = $2
          FROM door WHERE t.owner_api_key_hash = $1
    """


# $1 sample size -> (hash, key) of that many random clients that already carry a new key.
SAMPLE_KEYED_CLIENTS_SQL = """
    SELECT hash, key FROM (
        SELECT DISTINCT ON (owner_api_key_hash) owner_api_key_hash AS hash, owner_api_key AS key
        FROM (SELECT owner_api_key_hash, owner_api_key FROM sessions
              WHERE owner_api_key IS NOT NULL AND owner_api_key_hash IS NOT NULL
              UNION ALL
              SELECT owner_api_key_hash, owner_api_key FROM assistants
              WHERE owner_api_key IS NOT NULL AND owner_api_key_hash IS NOT NULL) owned
        ORDER BY owner_api_key_hash, owner_api_key
    ) clients ORDER BY random() LIMIT $1
"""

# $1 new hashes -> (hash, keys): every distinct key on each one's rows, NULL included — a client
# whose rows disagree (one row changed by hand) is seen, whichever row the mailer would read.
KEYS_ON_ROWS_OF_SQL = """
    SELECT hash, array_agg(DISTINCT key) AS keys FROM (
        SELECT owner_api_key_hash AS hash, owner_api_key AS key FROM sessions
         WHERE owner_api_key_hash = ANY($1::text[])
        UNION ALL
        SELECT owner_api_key_hash, owner_api_key FROM assistants
         WHERE owner_api_key_hash = ANY($1::text[])
    ) owned GROUP BY hash
"""

# $1 hashes -> (hash, ids): the session ids each of them owns.
SESSIONS_OWNED_BY_SQL = """
    SELECT owner_api_key_hash AS hash, array_agg(id::text) AS ids FROM sessions
     WHERE owner_api_key_hash = ANY($1::text[]) GROUP BY owner_api_key_hash
"""

# --- step 4's key rotation ------------------------------------------------------------------
# The work table (`rollback_bot.rotation_<rotation>`: old_hash, new_key, new_hash) is step 4's
# own; the functions below take its qualified name.

# How many heap pages a table has now.
TABLE_PAGES_SQL = "SELECT pg_relation_size($1::regclass) / current_setting('block_size')::int"

# Every old hash that still owns a row without a new key: the clients step 4 has yet to key.
PENDING_CLIENTS_SQL = """
    SELECT owner_api_key_hash AS old_hash FROM sessions
     WHERE owner_api_key IS NULL AND owner_api_key_hash IS NOT NULL
    UNION
    SELECT owner_api_key_hash FROM assistants
     WHERE owner_api_key IS NULL AND owner_api_key_hash IS NOT NULL
"""

PENDING_CLIENT_COUNT_SQL = f"SELECT count(*) FROM ({PENDING_CLIENTS_SQL}) p"

# What step 4's plan shows: pending clients, their rows, and every owned row.
ROTATION_COUNTS_SQL = f"""
    WITH pending AS ({PENDING_CLIENTS_SQL})
    SELECT (SELECT count(*) FROM pending) AS clients,
           (SELECT count(*) FROM sessions WHERE owner_api_key IS NULL
              AND owner_api_key_hash IS NOT NULL) AS sessions,
           (SELECT count(*) FROM assistants WHERE owner_api_key IS NULL
              AND owner_api_key_hash IS NOT NULL) AS assistants,
           (SELECT count(*) FROM sessions WHERE owner_api_key_hash IS NOT NULL)
         + (SELECT count(*) FROM assistants WHERE owner_api_key_hash IS NOT NULL) AS owned_rows
"""

# $1 new hashes -> those on some row (a ledger entry whose key reached the target).
NEW_HASHES_PRESENT_SQL = """
    SELECT owner_api_key_hash AS h FROM sessions WHERE owner_api_key_hash = ANY($1)
    UNION SELECT owner_api_key_hash FROM assistants WHERE owner_api_key_hash = ANY($1)
"""

# $1 old hashes -> those still owning a row without a new key.
OLD_HASHES_PENDING_SQL = """
    SELECT owner_api_key_hash AS h FROM sessions
     WHERE owner_api_key_hash = ANY($1) AND owner_api_key IS NULL
    UNION SELECT owner_api_key_hash FROM assistants
     WHERE owner_api_key_hash = ANY($1) AND owner_api_key IS NULL
"""

# Keys made inside the target: never in the bot's memory, logs or database.
NEW_KEY_SQL = {
    "uuid4": "gen_random_uuid()::text",
    # 244 random bits (two UUID4s) hashed to 43 URL-safe characters; no pgcrypto needed.
    "token": "rtrim(translate(encode(sha256((gen_random_uuid()::text || "
             "gen_random_uuid()::text)::bytea), 'base64'), '+/', '-_'), '=')",
}


# Enough memory to hash the distinct owners when the keys are made (one transaction).
HASH_OWNERS_WORK_MEM_SQL = "SET LOCAL work_mem = '64MB'"


def create_work_schema_sql(schema: str) -> str:
    return f"CREATE SCHEMA IF NOT EXISTS {schema}"


def drop_work_schema_sql(schema: str) -> str:
    """Fails (DependentObjectsStillExist) while another rotation's work table is in it."""
    return f"DROP SCHEMA IF EXISTS {schema}"


def drop_work_table_sql(work: str) -> str:
    return f"DROP TABLE IF EXISTS {work}"


def analyze_sql(work: str) -> str:
    return f"ANALYZE {work}"


def create_work_table_sql(work: str) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {work} (old_hash text NOT NULL, new_key text NOT NULL,"
            f" new_hash text NOT NULL)")


def work_table_index_sql(work: str, column: str) -> str:
    """A unique index on one column of the work table, built once its rows are in."""
    return (f"CREATE UNIQUE INDEX IF NOT EXISTS {work.split('.')[1]}_{column} "
            f"ON {work} ({column})")


def work_probe_index_sql(work: str) -> str:
    """A hash index on the work table's old hash, for the rewrite's and the sweep's probe of
    every row: one bucket page per probe where the B-tree descends three levels comparing
    strings (2 us against 4 us a probe, 14 % of a range's time at 100,000 clients; README)."""
    return (f"CREATE INDEX IF NOT EXISTS {work.split('.')[1]}_old_hash_probe "
            f"ON {work} USING hash (old_hash)")


def work_new_hashes_among_sql(work: str) -> str:
    """$1 new hashes -> those the work table holds (through its unique index)."""
    return f"SELECT new_hash FROM {work} WHERE new_hash = ANY($1::text[])"


def work_pairs_page_sql(work: str) -> str:
    """$1 the last old hash of the page before ('' first), $2 page size -> the next page of
    old hash -> new hash (never the key), along the unique index: one short query each."""
    return (f"SELECT old_hash, new_hash FROM {work} WHERE old_hash > $1 "
            f"ORDER BY old_hash LIMIT $2")


def make_keys_sql(work: str, key_format: str) -> str:
    """Every pending client without a key in the work table gets one (its sha256 beside it).
    GROUP BY rather than UNION: the planner then hashes the distinct owners instead of
    sorting every row; grouped before the work table is asked, so it is asked once per client,
    not once per row."""
    return f"""
        INSERT INTO {work} (old_hash, new_key, new_hash)
        SELECT old_hash, new_key, encode(sha256(new_key::bytea), 'hex')
          FROM (SELECT d.old_hash, {NEW_KEY_SQL[key_format]} AS new_key
                  FROM (SELECT p.old_hash
                          FROM (SELECT owner_api_key_hash AS old_hash FROM sessions
                                 WHERE owner_api_key IS NULL AND owner_api_key_hash IS NOT NULL
                                UNION ALL
                                SELECT owner_api_key_hash FROM assistants
                                 WHERE owner_api_key IS NULL AND owner_api_key_hash IS NOT NULL
                               ) p
                         GROUP BY p.old_hash) d
                 WHERE NOT EXISTS (SELECT 1 FROM {work} w WHERE w.old_hash = d.old_hash)) k
    """


def adopt_keys_sql(work: str) -> str:
    """Ledger pairs ($1 old, $2 new; one page of the ledger) of clients with rows both re-keyed
    and not: the key of a re-keyed row, so that the rest gets the same one. Pending is asked
    per pair through the service's hash index, not by a scan of both tables per page."""
    return f"""
        INSERT INTO {work} (old_hash, new_key, new_hash)
        SELECT p.old, r.key, p.new FROM unnest($1::text[], $2::text[]) AS p(old, new)
          CROSS JOIN LATERAL ({KEY_OF_HASH_SQL.replace("$1", "p.new")}) AS r(key)
         WHERE EXISTS (SELECT 1 FROM sessions WHERE owner_api_key_hash = p.old
                          AND owner_api_key IS NULL)
            OR EXISTS (SELECT 1 FROM assistants WHERE owner_api_key_hash = p.old
                          AND owner_api_key IS NULL)
        ON CONFLICT DO NOTHING
    """


# For the connections that rewrite pages and sweep: join each row to the work table through
# an index on old_hash (`work_probe_index_sql`). The planner's hash join builds a hash of the
# whole work table in every transaction: 15 ms at 100,000 clients; at a million it spills past
# work_mem, a fixed cost per transaction that no range size can shrink. A probe does not.
PROBE_WORK_TABLE_BY_INDEX_SQL = (
    "SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_memoize = off")


def statement_timeout_sql(seconds: float) -> str:
    """For the rewriting connections: a statement (its own transaction) running longer is
    cancelled and rolled back, its row locks released."""
    return f"SET statement_timeout = {max(1, round(seconds * 1000))}"


NO_STATEMENT_TIMEOUT_SQL = "SET LOCAL statement_timeout = 0"


def rekey_pages_sql(table: str, work: str) -> str:
    """One range of heap pages ($1 <= page < $2) of `table`, re-keyed from the work table."""
    return f"""
        UPDATE {table} AS t SET owner_api_key = w.new_key, owner_api_key_hash = w.new_hash
          FROM {work} AS w
         WHERE t.ctid >= format('(%s,0)', $1::bigint)::tid
           AND t.ctid < format('(%s,0)', $2::bigint)::tid
           AND t.owner_api_key_hash = w.old_hash
    """


# --- step 4's key rotation: what a stopped run left -----------------------------------------

# $1 the work table's qualified name: is it (still) in the target?
WORK_TABLE_EXISTS_SQL = "SELECT to_regclass($1) IS NOT NULL"

# $1 old hashes -> how many of those clients still own rows without a new key.
CLIENTS_STILL_PENDING_SQL = """
    SELECT count(*) FROM (
        SELECT owner_api_key_hash FROM sessions
         WHERE owner_api_key_hash = ANY($1::text[]) AND owner_api_key IS NULL
        UNION
        SELECT owner_api_key_hash FROM assistants
         WHERE owner_api_key_hash = ANY($1::text[]) AND owner_api_key IS NULL) pending
"""
