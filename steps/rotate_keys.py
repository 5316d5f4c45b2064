"""Step 4: one new API key per client, generated inside the target database.

A client is a distinct old `owner_api_key_hash` across sessions AND assistants (the runbook's SQL
gives every ROW its own key — a bug). The step works in three phases, each resumable:

1. Keys. One transaction makes a key per pending client into a work table in the TARGET
   (`rollback_bot.rotation_<rotation>`: old hash, new key, new hash), so a key never leaves the
   target database; the bot's ledger then records old hash -> new hash, before any row is touched.
2. Pages. Both tables are rewritten in physical order, a range of heap pages per transaction
   (a TID range scan joined to the work table), `ROTATION_WORKERS` transactions at a time. Each
   range is sized when a worker takes it, from what the last ranges of its table cost, so that
   it holds its row locks about `ROTATION_TARGET_TXN_SECONDS` on any machine, slow or loaded
   (`steps.page_batches`). Visiting rows where they lie, instead of client by client across the
   whole table, is what lets this beat the runbook's own single UPDATE (README "Performance").
3. Sweep. The same join once more over every page the tables now have (ranges sized the same
   way, by their own cost: almost nothing matches) re-keys rows written with an old hash while
   the pages were visited, or moved by the service. Not through the service's hash index:
   after phase 2 every old hash there points at ten dead row versions. Then the work table is
   dropped.

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
from dataclasses import dataclass, field
from datetime import UTC

import asyncpg

from bot.domain.ledgers import ClosedRotationRecord
from bot.domain.step_protocol import CheckResult, Outcome, OutputSink, Plan, StepContext, StepError
from bot.domain.steps import StepName
from bot.settings import Settings
from steps import target_sql as sql
from steps.page_batches import BatchSizer, PageCursor, PageRange
from steps.rotation_report import continuing, left_behind_lines, rotation_report
from steps.target_db import connect

TABLES = ("sessions", "assistants")
WORK_SCHEMA = "rollback_bot"
LEDGER_CHUNK = 5_000  # pairs per ledger transaction
# A rewriting transaction still running at this many times the target is cancelled (its row
# locks go with it) and its range retried in halves: sizing by the last ranges' cost cannot
# foresee a stall (a checkpoint, a lock the service holds), a cancel bounds it.
CANCEL_AFTER_TARGETS = 1.8
# A one-page range cancelled this often waits for what holds it up (a lock) rather than spin.
PATIENT_AFTER_CANCELS = 8


def _target_error(what: str, exc: Exception) -> StepError:
    """A target failure in one sentence. Only the primary message: a DETAIL line may quote
    row values (e.g. a unique violation on `owner_api_key` quotes the new key)."""
    if isinstance(exc, asyncpg.PostgresError):
        return StepError(f"{what}: {exc.sqlstate} {exc.args[0] if exc.args else ''}".strip())
    return StepError(f"{what}: {type(exc).__name__}")


async def table_pages(conn: asyncpg.Connection) -> dict[str, int]:
    """How many heap pages each table has now."""
    return {t: int(await conn.fetchval(sql.TABLE_PAGES_SQL, t)) for t in TABLES}


async def drop_work_table(conn: asyncpg.Connection, work: str) -> None:
    """The work table, and its schema unless another run's work table is still there."""
    await conn.execute(sql.drop_work_table_sql(work))
    with contextlib.suppress(asyncpg.DependentObjectsStillExistError):
        await conn.execute(sql.drop_work_schema_sql(WORK_SCHEMA))


def work_table(run_id: str) -> str:
    return f"{WORK_SCHEMA}.rotation_{run_id.replace('-', '')}"


async def work_table_exists(conn: asyncpg.Connection, table: str) -> bool:
    return bool(await conn.fetchval(sql.WORK_TABLE_EXISTS_SQL, table))


def page_cursor(settings: Settings, sizes: dict[str, int], *, sweep: bool = False) -> PageCursor:
    """Ranges over these tables' pages, each transaction sized to last the target time (a
    sweep's ranges by their own cost: almost no row matches there); a sweep's last range of a
    table also takes the pages it has gained since."""
    return PageCursor(sizes, {t: BatchSizer(settings.rotation_target_txn_seconds,
                                            settings.rotation_batch_pages,
                                            settings.rotation_max_batch_pages) for t in sizes},
                      open_end=sweep)


def keyed_by_closed_line(closed: ClosedRotationRecord, owned_rows: int) -> str:
    return (f"every owned row ({owned_rows:,}) already holds the key the rotation of run "
            f"{closed.rotation_id[:8]} gave it (closed at "
            f"{closed.closed_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC)")


async def reconcile(ctx: StepContext, work: str | None) -> int:
    """Forget ledger entries whose key never reached the target: the new hash is on no row and
    not in the work table (`work`, when it is still there), and the old hash still has rows
    without a key. Page by page of the ledger: nothing of it is held whole."""
    stale: list[str] = []
    async with connect(ctx.settings.target_database_url.get_secret_value()) as conn:
        async for page in ctx.rotations.pages(ctx.rotation_id, LEDGER_CHUNK):
            kept = ({r["new_hash"] for r in await conn.fetch(
                sql.work_new_hashes_among_sql(work), list(page.values()))} if work else set())
            unknown = {old: new for old, new in page.items() if new not in kept}
            if not unknown:
                continue
            present = {r["h"] for r in await conn.fetch(sql.NEW_HASHES_PRESENT_SQL,
                                                        list(unknown.values()))}
            absent = [old for old, new in unknown.items() if new not in present]
            if absent:
                pending = {r["h"] for r in await conn.fetch(sql.OLD_HASHES_PENDING_SQL, absent)}
                stale += [old for old in absent if old in pending]
    for first in range(0, len(stale), LEDGER_CHUNK):
        await ctx.rotations.forget(ctx.rotation_id, stale[first:first + LEDGER_CHUNK])
    return len(stale)


class RotateKeysStep:
    name = StepName.ROTATE_KEYS

    async def _counts(self, ctx: StepContext) -> dict[str, int]:
        async with connect(ctx.settings.target_database_url.get_secret_value()) as conn:
            try:
                row = await conn.fetchrow(sql.ROTATION_COUNTS_SQL)
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
        pages = sum(counts[f"{t}_pages"] for t in TABLES)
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
            facts={"clients": counts["clients"], "txn_seconds": s.rotation_target_txn_seconds,
                   "workers": s.rotation_workers, "key_format": s.key_format.value,
                   **({"continues_rotation_of": ctx.rotation_id[:8]} if adopted else {})},
            volatile={"sessions": counts["sessions"], "assistants": counts["assistants"]},
            details=(*adopted, clients,
                     f"one new {s.key_format.value} key per client, the same on all its rows; "
                     f"owner_api_key_hash rewritten to the new key's sha256",
                     f"{where}; the bot keeps hashes only",
                     f"rows are rewritten in physical order ({pages:,} pages), "
                     f"{s.rotation_workers} transactions at a time, each sized from the last "
                     f"ones to hold its row locks about {s.rotation_target_txn_seconds:g} s; "
                     f"then a sweep for rows written meanwhile"),
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
        if not await ctx.rotations.count(ctx.rotation_id):
            closed = await ctx.rotations.last_closed()
            if closed is not None:  # a run after one whose rotation is over
                return CheckResult(True, keyed_by_closed_line(closed, counts["owned_rows"]))
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
                pages = page_cursor(s, await table_pages(conn))
            rewritten = await self._rewrite(ctx, work, pages, emit)
            async with connect(url) as conn:
                sweep = page_cursor(s, await table_pages(conn), sweep=True)
            emit(f"sweep of {sweep.total:,} pages for rows written meanwhile")
            swept = await self._rewrite(ctx, work, sweep, None)
            late = sum(swept.updated.values())
            emit("sweep: no row written meanwhile" if not late else
                 f"sweep: {late:,} row{'' if late == 1 else 's'} written meanwhile re-keyed")
            async with connect(url) as conn:
                left = await conn.fetchval(sql.PENDING_CLIENT_COUNT_SQL)
                if left:
                    raise StepError(f"{left:,} clients still have rows without a key after the "
                                    f"sweep (written during it?): Retry re-keys them")
                await drop_work_table(conn, work)
        except asyncpg.PostgresError as exc:
            raise _target_error("the target refused the rotation (its current transaction "
                                "was rolled back; Retry resumes)", exc) from None
        batches = rewritten.batches
        updated = {t: rewritten.updated[t] + swept.updated[t] for t in TABLES}
        return Outcome(
            summary=f"{clients:,} clients re-keyed in {batches} batch"
                    f"{'' if batches == 1 else 'es'}: {updated['sessions']:,} sessions, "
                    f"{updated['assistants']:,} assistants",
            facts={"clients_rotated": clients, "batches": batches,
                   "sessions_updated": updated["sessions"],
                   "assistants_updated": updated["assistants"],
                   **transaction_seconds(rewritten.seconds + swept.seconds),
                   "transactions_cut_short": rewritten.cancelled + swept.cancelled,
                   "duration_s": round(time.monotonic() - started, 3)},
        )

    async def _make_keys(self, ctx: StepContext, work: str, emit: OutputSink) -> int:
        """Phase 1: the work table holds a key for every pending client; the ledger knows every
        pair in it. Returns how many clients the work table holds."""
        s = ctx.settings
        url = s.target_database_url.get_secret_value()
        async with connect(url) as conn:
            existed = await work_table_exists(conn, work)
        forgotten = await reconcile(ctx, work if existed else None)
        if forgotten:
            emit(f"{forgotten:,} ledger entries from an interrupted run were discarded")
        async with connect(url) as conn:
            async with conn.transaction():
                await conn.execute(sql.HASH_OWNERS_WORK_MEM_SQL)
                await conn.execute(sql.create_work_schema_sql(WORK_SCHEMA))
                await conn.execute(sql.create_work_table_sql(work))
                if not existed:  # keys already on rows: adopted, so their clients keep them
                    async for page in ctx.rotations.pages(ctx.rotation_id, LEDGER_CHUNK):
                        await conn.execute(sql.adopt_keys_sql(work), list(page),
                                           list(page.values()))
                await conn.execute(sql.make_keys_sql(work, s.key_format.value))
                for column in ("old_hash", "new_hash"):  # built once, after the rows are in
                    await conn.execute(sql.work_table_index_sql(work, column))
                await conn.execute(sql.work_probe_index_sql(work))
                await conn.execute(sql.analyze_sql(work))
            clients = await self._record_pairs(ctx, conn, work)
        if clients:
            emit(f"new keys for {clients:,} clients made in the target ({work}); "
                 f"the ledger holds their hashes")
        return clients

    @staticmethod
    async def _record_pairs(ctx: StepContext, conn: asyncpg.Connection, work: str) -> int:
        """The ledger learns every pair of the work table, a page at a time (keyset along its
        index, each page one short query): at a million clients the pairs never sit in the
        bot's memory (469 MB when they did). The pages are written to the ledger by
        ROTATION_WORKERS connections at once (each pair costs the bot database a trigger and a
        foreign-key check: 1.6 s for 100,000 pairs on one connection); at most two pages wait
        between reader and writers. Returns how many pairs there are."""
        queue: asyncio.Queue[dict[str, str] | None] = asyncio.Queue(maxsize=2)
        recorders = max(1, ctx.settings.rotation_workers)

        async def record() -> None:
            while (page := await queue.get()) is not None:
                await ctx.rotations.record(ctx.rotation_id, page)

        async def read() -> int:
            after, clients = "", 0
            while rows := await conn.fetch(sql.work_pairs_page_sql(work), after, LEDGER_CHUNK):
                await queue.put({r["old_hash"]: r["new_hash"] for r in rows})
                clients += len(rows)
                after = rows[-1]["old_hash"]
            for _ in range(recorders):
                await queue.put(None)
            return clients

        writers = [asyncio.create_task(record()) for _ in range(recorders)]
        try:
            clients = await read()
            await asyncio.gather(*writers)
        finally:
            for task in writers:
                task.cancel()
            await asyncio.gather(*writers, return_exceptions=True)
        return clients

    async def _rewrite(self, ctx: StepContext, work: str, pages: PageCursor,
                       emit: OutputSink | None) -> Rewritten:
        """Re-keys the rows of the cursor's ranges, in order, several ranges at once; each
        range is cut when a worker takes it, sized by what the last ones of its table cost.
        Each row is joined to the work table through its index: a hash of the work table would
        be built in every transaction (a cost no range size can shrink: at a million clients it
        spills past work_mem, and the sweep took 393 s)."""
        url = ctx.settings.target_database_url.get_secret_value()
        done = Rewritten(dict.fromkeys(TABLES, 0))
        cancel_after = CANCEL_AFTER_TARGETS * ctx.settings.rotation_target_txn_seconds

        async def worker() -> None:
            async with connect(url) as conn:
                await conn.execute(sql.PROBE_WORK_TABLE_BY_INDEX_SQL)
                await conn.execute(sql.statement_timeout_sql(cancel_after))
                while (item := pages.take()) is not None:
                    began = time.monotonic()
                    try:
                        status = await rekey_range(conn, work, item)
                    except asyncpg.QueryCanceledError:  # rolled back: its halves come next
                        seconds = time.monotonic() - began
                        done.cut_short(seconds)
                        pages.give_back(item, seconds)
                        if emit is not None:
                            emit(f"cut short after {seconds:.2f} s: {item.label()}: rolled "
                                 f"back, retried in smaller ranges")
                        continue
                    seconds = time.monotonic() - began
                    pages.sizers[item.table].observe(item.size, seconds)
                    rows = int(status.split()[-1])
                    done.add(item, rows, seconds)
                    if emit is not None:
                        emit(f"batch {done.batches}: {item.label()}: {rows:,} rows re-keyed in "
                             f"{seconds:.2f} s ({done.pages / max(pages.total, 1):.0%} of pages)")

        workers = [asyncio.create_task(worker()) for _ in range(ctx.settings.rotation_workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        return done


async def rekey_range(conn: asyncpg.Connection, work: str, item: PageRange) -> str:
    """One range re-keyed, in one transaction under the connection's statement timeout; a page
    cancelled PATIENT_AFTER_CANCELS times (a row lock held that long) without a timeout."""
    statement = sql.rekey_pages_sql(item.table, work)
    if item.cancelled < PATIENT_AFTER_CANCELS:
        return str(await conn.execute(statement, item.first, item.end))
    async with conn.transaction():
        await conn.execute(sql.NO_STATEMENT_TIMEOUT_SQL)
        return str(await conn.execute(statement, item.first, item.end))


@dataclass
class Rewritten:
    """What one pass over the pages did: rows re-keyed per table, transactions, pages, the
    longest transaction."""

    updated: dict[str, int]
    batches: int = 0
    pages: int = 0
    cancelled: int = 0  # transactions cut short at the timeout (their ranges retried in halves)
    seconds: list[float] = field(default_factory=list)  # each transaction's (cut short too)

    def cut_short(self, seconds: float) -> None:
        self.cancelled += 1
        self.seconds.append(seconds)

    def add(self, item: PageRange, rows: int, seconds: float) -> None:
        self.updated[item.table] += rows
        self.batches += 1
        self.pages += item.size
        self.seconds.append(seconds)


def transaction_seconds(seconds: list[float]) -> dict[str, float]:
    """How long the writing transactions held their row locks: p50 / p90 / p99 / max (nearest
    rank), so that the target time is seen honoured by most, not only the worst one."""
    ranked = sorted(seconds) or [0.0]

    def rank(q: float) -> float:
        return round(ranked[min(len(ranked) - 1, max(0, math.ceil(q * len(ranked)) - 1))], 3)

    return {"txn_p50_s": rank(0.5), "txn_p90_s": rank(0.9), "txn_p99_s": rank(0.99),
            "longest_batch_s": round(ranked[-1], 3)}
