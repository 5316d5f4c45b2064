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
