"""Step 4: one new API key per client, generated inside the target database.

A client is a distinct old `owner_api_key_hash` across sessions AND assistants (the runbook's SQL
gives every ROW its own key — a bug). The step works in three phases, each resumable:

1. Keys. One transaction makes a key per pending client into a work table in the TARGET
   (`rollback_bot.rotation_<rotation>`: old hash, new key, new hash), so a key never leaves the
   target database; the bot's ledger then records old hash -> new hash, before any row is touched.
2. Pages. Both tables are rewritten in physical order, `ROTATION_BATCH_PAGES` heap pages per
   transaction (a TID range scan joined to the work table), `ROTATION_WORKERS` transactions at
   a time. Visiting rows where they lie, instead of client by client across the whole table, is
   what lets this beat the runbook's own single UPDATE (see README "Performance").
3. Sweep. The same join once more over every page the tables now have (ten times the range
   per transaction; almost nothing matches) re-keys rows written with an old hash while the pages
   were visited, or moved by the service. Not through the hash index: after phase 2 every old
   hash there points at ten dead row versions. Then the work table is dropped.

A crash anywhere leaves either the work table (phase 1 is redone from it: the same keys) or keys
already on rows. If the work table was lost, keys already applied are adopted back from the rows
(`adopt`); ledger entries that never reached a row are forgotten (`reconcile`).

The work table and the ledger are keyed by the ROTATION (`ctx.rotation_id`), not the run: a run
started after an aborted or rejected one continues that run's rotation, from its work table and
ledger, as a resume would (`steps.rotation_report` says so in the plan and on a stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg

from bot.domain.step_protocol import CheckResult, Outcome, OutputSink, Plan, StepContext, StepError
from bot.domain.steps import StepName
from bot.settings import KeyFormat
from steps.rotation_report import continuing, left_behind_lines, rotation_report
from steps.target_db import connect

TABLES = ("sessions", "assistants")
WORK_SCHEMA = "rollback_bot"
LEDGER_CHUNK = 5_000  # pairs per ledger transaction
SWEEP_SCALE = 10  # the sweep's page ranges, in batches

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


def _target_error(what: str, exc: Exception) -> StepError:
    """A target failure in one sentence. Only the primary message: a DETAIL line may quote
    row values (e.g. a unique violation on `owner_api_key` quotes the new key)."""
    if isinstance(exc, asyncpg.PostgresError):
        return StepError(f"{what}: {exc.sqlstate} {exc.args[0] if exc.args else ''}".strip())
    return StepError(f"{what}: {type(exc).__name__}")


PAGES_SQL = "SELECT pg_relation_size($1::regclass) / current_setting('block_size')::int"


async def table_pages(conn: asyncpg.Connection) -> dict[str, int]:
    """How many heap pages each table has now."""
    return {t: int(await conn.fetchval(PAGES_SQL, t)) for t in TABLES}


async def drop_work_table(conn: asyncpg.Connection, work: str) -> None:
    """The work table, and its schema unless another run's work table is still there."""
    await conn.execute(f"DROP TABLE IF EXISTS {work}")
    with contextlib.suppress(asyncpg.DependentObjectsStillExistError):
        await conn.execute(f"DROP SCHEMA IF EXISTS {WORK_SCHEMA}")


def work_table(run_id: str) -> str:
    return f"{WORK_SCHEMA}.rotation_{run_id.replace('-', '')}"


async def work_table_exists(conn: asyncpg.Connection, table: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table))


def make_keys_sql(table: str, key_format: KeyFormat) -> str:
    """Every pending client without a key in the work table gets one (its sha256 beside it).
    GROUP BY rather than UNION: the planner then hashes the ~100k distinct owners instead of
    sorting every row."""
    return f"""
        INSERT INTO {table} (old_hash, new_key, new_hash)
        SELECT old_hash, new_key, encode(sha256(new_key::bytea), 'hex')
          FROM (SELECT p.old_hash, {KEY_SQL[key_format]} AS new_key
                  FROM (SELECT owner_api_key_hash AS old_hash FROM sessions
                         WHERE owner_api_key IS NULL AND owner_api_key_hash IS NOT NULL
                        UNION ALL
                        SELECT owner_api_key_hash FROM assistants
                         WHERE owner_api_key IS NULL AND owner_api_key_hash IS NOT NULL) p
                 WHERE NOT EXISTS (SELECT 1 FROM {table} w WHERE w.old_hash = p.old_hash)
                 GROUP BY p.old_hash) k
    """


def adopt_sql(table: str) -> str:
    """Ledger pairs ($1 old, $2 new) of clients with rows both re-keyed and not: the key of a
    re-keyed row, so that the rest gets the same one."""
    return f"""
        INSERT INTO {table} (old_hash, new_key, new_hash)
        SELECT p.old, r.key, p.new FROM unnest($1::text[], $2::text[]) AS p(old, new)
          JOIN ({PENDING_SQL}) AS pending ON pending.old_hash = p.old
          CROSS JOIN LATERAL (
            (SELECT owner_api_key AS key FROM sessions WHERE owner_api_key_hash = p.new
               AND owner_api_key IS NOT NULL LIMIT 1)
            UNION ALL
            (SELECT owner_api_key FROM assistants WHERE owner_api_key_hash = p.new
               AND owner_api_key IS NOT NULL LIMIT 1)
            LIMIT 1) AS r
        ON CONFLICT DO NOTHING
    """


def pages_sql(table: str, work: str) -> str:
    """One range of heap pages ($1 <= page < $2) of `table`, re-keyed from the work table."""
    return f"""
        UPDATE {table} AS t SET owner_api_key = w.new_key, owner_api_key_hash = w.new_hash
          FROM {work} AS w
         WHERE t.ctid >= format('(%s,0)', $1::bigint)::tid
           AND t.ctid < format('(%s,0)', $2::bigint)::tid
           AND t.owner_api_key_hash = w.old_hash
    """


@dataclass(frozen=True)
class PageRange:
    table: str
    first: int
    end: int  # exclusive
    pages: int  # of the table when the range was cut

    def label(self) -> str:
        return f"{self.table} pages {self.first:,}-{self.end - 1:,} of {self.pages:,}"


def page_ranges(sizes: dict[str, int], per_batch: int, *, open_end: bool = False
                ) -> Iterator[PageRange]:
    """Ranges over each table's first `pages` pages; with `open_end` the last range of a table
    also takes whatever pages it has gained since."""
    for table, pages in sizes.items():
        for first in range(0, pages, per_batch):
            end = min(first + per_batch, pages)
            yield PageRange(table, first, 2**31 - 1 if open_end and end == pages else end, pages)


async def reconcile(ctx: StepContext, kept: set[str]) -> int:
    """Forget ledger entries whose key never reached the target: the new hash is on no row and
    not in the work table (`kept`), and the old hash still has rows without a key."""
    mapping = await ctx.rotations.mapping(ctx.rotation_id)
    unknown = {old: new for old, new in mapping.items() if new not in kept}
    if not unknown:
        return 0
    async with connect(ctx.settings.target_database_url.get_secret_value()) as conn:
        present = {r["h"] for r in await conn.fetch(PRESENT_SQL, list(unknown.values()))}
        absent = [old for old, new in unknown.items() if new not in present]
        if not absent:
            return 0
        pending = {r["h"] for r in await conn.fetch(STILL_PENDING_SQL, absent)}
    stale = [old for old in absent if old in pending]
    await ctx.rotations.forget(ctx.rotation_id, stale)
    return len(stale)


class RotateKeysStep:
    name = StepName.ROTATE_KEYS

    async def _counts(self, ctx: StepContext) -> dict[str, int]:
        async with connect(ctx.settings.target_database_url.get_secret_value()) as conn:
            try:
                row = await conn.fetchrow(COUNTS_SQL)
                pages = await table_pages(conn)
                leftover = await work_table_exists(conn, work_table(ctx.rotation_id))
            except asyncpg.PostgresError as exc:  # e.g. no owner_api_key before the downgrade
                raise _target_error("cannot count clients on the target", exc) from None
        assert row is not None
        return {**dict(row), **{f"{t}_pages": n for t, n in pages.items()},
                "work_table": int(leftover)}

    async def plan(self, ctx: StepContext) -> Plan:
        s = ctx.settings
        counts = await self._counts(ctx)
        clients = (f"{counts['clients']:,} clients: {counts['sessions']:,} sessions, "
                   f"{counts['assistants']:,} assistants")
        batches = sum(math.ceil(counts[f"{t}_pages"] / s.rotation_batch_pages) for t in TABLES)
        adopted = await continuing(ctx)
        work = work_table(ctx.rotation_id)
        by = f"run {ctx.rotation_id[:8]}" if adopted else "an earlier attempt"
        where = (f"the work table {work} left by {by} is still in the target: its keys are "
                 f"reused, then it is dropped" if counts["work_table"] else
                 f"keys are made inside the target database, in the work table {work} (dropped "
                 f"at the end)")
        return Plan(
            step=self.name,
            summary="; ".join((clients, *adopted)),
            # Approved: how many clients get a key, and how. Shown only: the row counts, which
            # move while the live service writes; the step rewrites whatever rows those clients
            # own when it runs (and sweeps rows written meanwhile), so they are not the plan.
            facts={"clients": counts["clients"], "batch_pages": s.rotation_batch_pages,
                   "workers": s.rotation_workers, "key_format": s.key_format.value,
                   **({"continues_rotation_of": ctx.rotation_id[:8]} if adopted else {})},
            volatile={"sessions": counts["sessions"], "assistants": counts["assistants"]},
            details=(*adopted, clients,
                     f"one new {s.key_format.value} key per client, the same on all its rows; "
                     f"owner_api_key_hash rewritten to the new key's sha256",
                     f"{where}; the bot keeps hashes only",
                     f"rows are rewritten in physical order: {batches:,} transactions of up to "
                     f"{s.rotation_batch_pages:,} pages, {s.rotation_workers} at a time; then a "
                     f"sweep by hash for rows written meanwhile"),
        )

    async def check(self, ctx: StepContext) -> CheckResult:
        counts = await self._counts(ctx)
        if counts["clients"]:
            return CheckResult(False, f"{counts['clients']:,} clients still without a new key")
        if counts["work_table"]:
            return CheckResult(False, f"{work_table(ctx.rotation_id)} is still there: the sweep "
                                      "has not finished")
        if counts["owned_rows"] == 0:
            return CheckResult(True, "the target has no client-owned rows")
        if not await ctx.rotations.mapping(ctx.rotation_id):
            return CheckResult(False, "no key rotation is recorded for this run's rotation")
        return CheckResult(True, f"every owned row holds a new key ({counts['owned_rows']:,})")

    async def left_behind(self, ctx: StepContext) -> tuple[str, ...]:
        """What a stop leaves of this rotation (keyed, mailed, the work table), if anything."""
        work = work_table(ctx.rotation_id)
        return left_behind_lines(ctx, work, await rotation_report(ctx, work))

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        s = ctx.settings
        url = s.target_database_url.get_secret_value()
        started = time.monotonic()
        work = work_table(ctx.rotation_id)
        try:
            clients = await self._make_keys(ctx, work, emit)
            if clients == 0:
                async with connect(url) as conn:
                    await drop_work_table(conn, work)
                return Outcome(summary="no client without a new key: nothing to do",
                               facts={"clients_rotated": 0, "batches": 0, "sessions_updated": 0,
                                      "assistants_updated": 0,
                                      "duration_s": round(time.monotonic() - started, 3)})
            async with connect(url) as conn:
                todo = list(page_ranges(await table_pages(conn), s.rotation_batch_pages))
            updated = await self._rewrite(ctx, work, todo, emit)
            async with connect(url) as conn:
                sweep = page_ranges(await table_pages(conn),
                                    s.rotation_batch_pages * SWEEP_SCALE, open_end=True)
            swept = await self._rewrite(ctx, work, list(sweep), None)
            late = sum(swept.values())
            emit("sweep: no row written meanwhile" if not late else
                 f"sweep: {late:,} row{'' if late == 1 else 's'} written meanwhile re-keyed")
            for table in TABLES:
                updated[table] += swept[table]
            async with connect(url) as conn:
                left = await conn.fetchval(f"SELECT count(*) FROM ({PENDING_SQL}) p")
                if left:
                    raise StepError(f"{left:,} clients still have rows without a key after the "
                                    f"sweep (written during it?): Retry re-keys them")
                await drop_work_table(conn, work)
        except asyncpg.PostgresError as exc:
            raise _target_error("the target refused the rotation (its current transaction "
                                "was rolled back; Retry resumes)", exc) from None
        batches = len(todo)
        return Outcome(
            summary=f"{clients:,} clients re-keyed in {batches} batch"
                    f"{'' if batches == 1 else 'es'}: {updated['sessions']:,} sessions, "
                    f"{updated['assistants']:,} assistants",
            facts={"clients_rotated": clients, "batches": batches,
                   "sessions_updated": updated["sessions"],
                   "assistants_updated": updated["assistants"],
                   "duration_s": round(time.monotonic() - started, 3)},
        )

    async def _make_keys(self, ctx: StepContext, work: str, emit: OutputSink) -> int:
        """Phase 1: the work table holds a key for every pending client; the ledger knows every
        pair in it. Returns how many clients the work table holds."""
        s = ctx.settings
        url = s.target_database_url.get_secret_value()
        async with connect(url) as conn:
            existed = await work_table_exists(conn, work)
            kept = ({r["new_hash"] for r in await conn.fetch(f"SELECT new_hash FROM {work}")}
                    if existed else set())
        forgotten = await reconcile(ctx, kept)
        if forgotten:
            emit(f"{forgotten:,} ledger entries from an interrupted run were discarded")
        known = await ctx.rotations.mapping(ctx.rotation_id)
        async with connect(url) as conn:
            async with conn.transaction():
                await conn.execute("SET LOCAL work_mem = '64MB'")  # to hash the owners
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {WORK_SCHEMA}")
                await conn.execute(f"CREATE TABLE IF NOT EXISTS {work} (old_hash text NOT NULL,"
                                   " new_key text NOT NULL, new_hash text NOT NULL)")
                if known and not existed:
                    await conn.execute(adopt_sql(work), list(known), list(known.values()))
                await conn.execute(make_keys_sql(work, s.key_format))
                name = work.split(".")[1]
                for column in ("old_hash", "new_hash"):  # built once, after the rows are in
                    await conn.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {name}_{column} "
                                       f"ON {work} ({column})")
                await conn.execute(f"ANALYZE {work}")
            pairs = {r["old_hash"]: r["new_hash"]
                     for r in await conn.fetch(f"SELECT old_hash, new_hash FROM {work}")}
        unrecorded = [(old, new) for old, new in pairs.items() if known.get(old) != new]
        for first in range(0, len(unrecorded), LEDGER_CHUNK):
            await ctx.rotations.record(ctx.rotation_id,
                                       dict(unrecorded[first:first + LEDGER_CHUNK]))
        if pairs:
            emit(f"new keys for {len(pairs):,} clients made in the target ({work}); "
                 f"the ledger holds their hashes")
        return len(pairs)

    async def _rewrite(self, ctx: StepContext, work: str, todo: list[PageRange],
                       emit: OutputSink | None) -> dict[str, int]:
        """Re-keys the rows of these page ranges, in order, several ranges at once."""
        s = ctx.settings
        url = s.target_database_url.get_secret_value()
        queue: asyncio.Queue[PageRange] = asyncio.Queue()
        for item in todo:
            queue.put_nowait(item)
        updated = dict.fromkeys(TABLES, 0)
        done = 0

        async def worker() -> None:
            nonlocal done
            async with connect(url) as conn:
                while not queue.empty():
                    item = queue.get_nowait()
                    status = await conn.execute(pages_sql(item.table, work),
                                                item.first, item.end)
                    rows = int(status.split()[-1])
                    updated[item.table] += rows
                    done += 1
                    if emit is not None:
                        emit(f"batch {done}/{len(todo)}: {item.label()}: {rows:,} rows re-keyed")

        workers = [asyncio.create_task(worker()) for _ in range(min(s.rotation_workers,
                                                                      len(todo)) or 1)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        return updated
