"""Step 4: one new API key per client, generated inside the target database.

A client is a distinct old `owner_api_key_hash` across sessions AND assistants (the runbook's SQL
gives every ROW its own key — a bug). Each batch of clients is one transaction of set-based SQL
that writes the new key and its hash on all the client's rows together; only hashes come back.
Per batch: UPDATE (uncommitted) -> record old->new in the bot's ledger -> commit. A crash between
the two commits leaves ledger entries whose new hash never reached the target; `reconcile`
forgets those before the rest is resumed.
"""

from __future__ import annotations

import math
import time

import asyncpg

from bot.domain.steps import StepName
from bot.settings import KeyFormat
from steps.protocol import CheckResult, Outcome, OutputSink, Plan, StepContext, StepError
from steps.target_db import connect

KEY_SQL = {
    KeyFormat.UUID4: "gen_random_uuid()::text",
    # 244 random bits (two UUID4s) hashed to 43 URL-safe characters; no pgcrypto needed.
    KeyFormat.TOKEN: "rtrim(translate(encode(sha256((gen_random_uuid()::text || "
                     "gen_random_uuid()::text)::bytea), 'base64'), '+/', '-_'), '=')",
}

PENDING_SQL = """
    SELECT owner_api_key_hash AS old_hash FROM sessions
     WHERE owner_api_key IS NULL AND owner_api_key_hash IS NOT NULL
    UNION
    SELECT owner_api_key_hash FROM assistants
     WHERE owner_api_key IS NULL AND owner_api_key_hash IS NOT NULL
"""

COUNTS_SQL = f"""
    WITH pending AS ({PENDING_SQL})
    SELECT (SELECT count(*) FROM pending) AS clients,
           (SELECT count(*) FROM sessions WHERE owner_api_key IS NULL
              AND owner_api_key_hash IS NOT NULL) AS sessions,
           (SELECT count(*) FROM assistants WHERE owner_api_key IS NULL
              AND owner_api_key_hash IS NOT NULL) AS assistants,
           (SELECT count(*) FROM sessions WHERE owner_api_key_hash IS NOT NULL)
         + (SELECT count(*) FROM assistants WHERE owner_api_key_hash IS NOT NULL) AS owned_rows
"""

# Of the given new hashes, those on some target row; of the given old hashes, those still pending.
PRESENT_SQL = """
    SELECT owner_api_key_hash AS h FROM sessions WHERE owner_api_key_hash = ANY($1)
    UNION SELECT owner_api_key_hash FROM assistants WHERE owner_api_key_hash = ANY($1)
"""
STILL_PENDING_SQL = """
    SELECT owner_api_key_hash AS h FROM sessions
     WHERE owner_api_key_hash = ANY($1) AND owner_api_key IS NULL
    UNION SELECT owner_api_key_hash FROM assistants
     WHERE owner_api_key_hash = ANY($1) AND owner_api_key IS NULL
"""


def batch_sql(key_format: KeyFormat) -> str:
    """One batch: the next $1 pending clients after hash $2 (keyset over the hash indexes, so
    each batch reads only its own rows), one key each, on every row they own.

    Every row with the old hash is re-keyed, not only the NULL ones: a row the restarted Phase 2
    service wrote meanwhile with the OLD plaintext key must not keep the old key working."""
    return f"""
        WITH candidates AS (
            (SELECT DISTINCT owner_api_key_hash AS old_hash FROM sessions
              WHERE owner_api_key_hash > $2 AND owner_api_key IS NULL
              ORDER BY 1 LIMIT $1)
            UNION
            (SELECT DISTINCT owner_api_key_hash FROM assistants
              WHERE owner_api_key_hash > $2 AND owner_api_key IS NULL
              ORDER BY 1 LIMIT $1)
        ), batch AS (
            SELECT old_hash, {KEY_SQL[key_format]} AS new_key
            FROM (SELECT old_hash FROM candidates ORDER BY old_hash LIMIT $1) picked
        ), keyed AS (
            SELECT old_hash, new_key, encode(sha256(new_key::bytea), 'hex') AS new_hash
            FROM batch
        ), s AS (
            UPDATE sessions SET owner_api_key = k.new_key, owner_api_key_hash = k.new_hash
            FROM keyed k WHERE sessions.owner_api_key_hash = k.old_hash
            RETURNING 1
        ), a AS (
            UPDATE assistants SET owner_api_key = k.new_key, owner_api_key_hash = k.new_hash
            FROM keyed k WHERE assistants.owner_api_key_hash = k.old_hash
            RETURNING 1
        )
        SELECT old_hash, new_hash, (SELECT count(*) FROM s) AS sessions,
               (SELECT count(*) FROM a) AS assistants
        FROM keyed ORDER BY old_hash
    """


def _target_error(what: str, exc: Exception) -> StepError:
    """A target failure in one sentence. Only the primary message: a DETAIL line may quote
    row values (e.g. a unique violation on `owner_api_key` quotes the new key)."""
    if isinstance(exc, asyncpg.PostgresError):
        return StepError(f"{what}: {exc.sqlstate} {exc.args[0] if exc.args else ''}".strip())
    return StepError(f"{what}: {type(exc).__name__}")


async def reconcile(ctx: StepContext) -> int:
    """Forget ledger entries from a batch whose target transaction never committed: the new
    hash is on no target row and the old hash still has rows without a key."""
    mapping = await ctx.rotations.mapping(ctx.run_id)
    if not mapping:
        return 0
    async with connect(ctx.settings.target_database_url.get_secret_value()) as conn:
        present = {r["h"] for r in await conn.fetch(PRESENT_SQL, list(mapping.values()))}
        absent = {old: new for old, new in mapping.items() if new not in present}
        if not absent:
            return 0
        pending = {r["h"] for r in await conn.fetch(STILL_PENDING_SQL, list(absent))}
    stale = [old for old in absent if old in pending]
    await ctx.rotations.forget(ctx.run_id, stale)
    return len(stale)


class RotateKeysStep:
    name = StepName.ROTATE_KEYS

    async def _counts(self, ctx: StepContext) -> dict[str, int]:
        async with connect(ctx.settings.target_database_url.get_secret_value()) as conn:
            try:
                row = await conn.fetchrow(COUNTS_SQL)
            except asyncpg.PostgresError as exc:  # e.g. no owner_api_key before the downgrade
                raise _target_error("cannot count clients on the target", exc) from None
        assert row is not None
        return dict(row)

    async def plan(self, ctx: StepContext) -> Plan:
        s = ctx.settings
        counts = await self._counts(ctx)
        clients = (f"{counts['clients']:,} clients: {counts['sessions']:,} sessions, "
                   f"{counts['assistants']:,} assistants")
        return Plan(
            step=self.name,
            summary=clients,
            facts={"clients": counts["clients"], "sessions": counts["sessions"],
                   "assistants": counts["assistants"], "batch_size": s.rotation_batch_size,
                   "key_format": s.key_format.value},
            details=(clients,
                     f"one new {s.key_format.value} key per client, the same on all its rows; "
                     f"owner_api_key_hash rewritten to the new key's sha256",
                     f"{math.ceil(counts['clients'] / s.rotation_batch_size):,} batches of up "
                     f"to {s.rotation_batch_size:,} clients, one transaction each",
                     "keys are made inside the target database; the bot keeps hashes only"),
        )

    async def check(self, ctx: StepContext) -> CheckResult:
        counts = await self._counts(ctx)
        if counts["clients"]:
            return CheckResult(False, f"{counts['clients']:,} clients still without a new key")
        if counts["owned_rows"] == 0:
            return CheckResult(True, "the target has no client-owned rows")
        if not await ctx.rotations.mapping(ctx.run_id):
            return CheckResult(False, "no key rotation is recorded for this run")
        return CheckResult(True, f"every owned row holds a new key ({counts['owned_rows']:,})")

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        s = ctx.settings
        started = time.monotonic()
        try:
            forgotten = await reconcile(ctx)
        except asyncpg.PostgresError as exc:
            raise _target_error("cannot compare the ledger with the target", exc) from None
        if forgotten:
            emit(f"{forgotten:,} ledger entries from an interrupted batch were discarded")
        total = (await self._counts(ctx))["clients"]
        planned = math.ceil(total / s.rotation_batch_size)
        sql = batch_sql(s.key_format)
        batches = clients = sessions = assistants = 0
        cursor = ""  # old hashes are visited in order; new ones are skipped (key not NULL)
        async with connect(s.target_database_url.get_secret_value()) as conn:
            while True:
                try:
                    async with conn.transaction():
                        rows = await conn.fetch(sql, s.rotation_batch_size, cursor)
                        if not rows:
                            break
                        # Recorded before the target commits: a crash now leaves entries that
                        # reconcile() discards, never a rotated client the ledger does not know.
                        await ctx.rotations.record(
                            ctx.run_id, {r["old_hash"]: r["new_hash"] for r in rows})
                except asyncpg.PostgresError as exc:
                    raise _target_error(f"batch {batches + 1} failed on the target (rolled "
                                        f"back; {clients:,} clients done)", exc) from None
                cursor = rows[-1]["old_hash"]
                batches += 1
                clients += len(rows)
                sessions += rows[0]["sessions"]
                assistants += rows[0]["assistants"]
                emit(f"batch {batches}/{max(planned, batches)}: {len(rows):,} clients "
                     f"({clients:,}/{total:,})")
        return Outcome(
            summary=f"{clients:,} clients re-keyed in {batches} batch"
                    f"{'' if batches == 1 else 'es'}: {sessions:,} sessions, "
                    f"{assistants:,} assistants",
            facts={"clients_rotated": clients, "batches": batches,
                   "sessions_updated": sessions, "assistants_updated": assistants,
                   "duration_s": round(time.monotonic() - started, 3)},
        )
