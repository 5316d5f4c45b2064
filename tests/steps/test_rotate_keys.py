"""Step 4 on the sandbox target after the downgrade: one key per client, in batches, resumable."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.ledgers import SqlRotationLedger
from bot.domain.step_protocol import StepContext, StepError
from bot.urls import libpq_url
from steps.rotate_keys import RotateKeysStep, work_table
from tests.steps.conftest import (
    add_assistants_only_client,
    keys_by_old_hash,
    memory_context,
    owned_rows,
    sql_context,
)
from tests.steps.sandbox_settings import sandbox_settings

FULL_HASH = re.compile(r"[0-9a-f]{64}")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def assert_one_key_per_client(clients: Mapping[str, set[tuple[str, str | None]]],
                              ledger: Mapping[str, str]) -> set[str]:
    """Every client: one key on all its rows, its sha256 on the hash column, in the ledger."""
    keys: set[str] = set()
    for old_hash, found in clients.items():
        assert len(found) == 1, f"client {old_hash[:8]} has {len(found)} keys"
        ((new_hash, key),) = found
        assert key is not None and hashlib.sha256(key.encode()).hexdigest() == new_hash
        assert new_hash != old_hash and ledger[old_hash] == new_hash
        keys.add(key)
    assert len(keys) == len(clients), "two clients share a key"
    assert len(ledger) == len(clients)
    return keys


def assert_no_secret(text: str, keys: set[str]) -> None:
    leaked = [key[:4] + "..." for key in keys if key in text]
    assert not leaked, f"{len(leaked)} keys leaked"


async def add_padded_clients(url: str, clients: int = 6, rows_each: int = 10,
                             tag: str = "padded") -> None:
    """Clients whose sessions are interleaved over many heap pages (about 6 rows a page),
    appended after the rows already there."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await conn.execute("""
            INSERT INTO sessions (id, model, working_directory, owner_api_key_hash)
            SELECT gen_random_uuid(), 'claude-sonnet-4',
                   (SELECT string_agg(md5(random()::text || n), '') FROM generate_series(1, 40) n),
                   encode(sha256(($3 || (g % $1::int))::bytea), 'hex')
              FROM generate_series(1, $1::int * $2::int) AS g""", clients, rows_each, tag)
    finally:
        await conn.close()


async def work_tables(url: str) -> list[str]:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        rows = await conn.fetch("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON "
                                "n.oid = c.relnamespace WHERE n.nspname = 'rollback_bot'")
        schema = await conn.fetchval("SELECT count(*) FROM pg_namespace "
                                     "WHERE nspname = 'rollback_bot'")
    finally:
        await conn.close()
    return [r["relname"] for r in rows] + (["(schema)"] if schema else [])


async def work_keys(url: str, run_id: str) -> dict[str, str]:
    """old hash -> new key, as the work table in the target holds them."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        rows = await conn.fetch(f"SELECT old_hash, new_key FROM {work_table(run_id)}")
    finally:
        await conn.close()
    return {r["old_hash"]: r["new_key"] for r in rows}


async def test_one_key_per_client_page_by_page(
    phase2_target_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await add_padded_clients(phase2_target_url)
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path, rotation_batch_pages=2,
                                          rotation_max_batch_pages=2, rotation_workers=2))
    step = RotateKeysStep()
    before = await owned_rows(phase2_target_url)
    plan = await step.plan(ctx)
    assert dict(plan.facts) == {"clients": 12, "txn_seconds": 0.5, "workers": 2,
                                "key_format": "uuid4"}
    assert dict(plan.volatile) == {"sessions": 78, "assistants": 6}  # shown, not approved
    assert plan.details[0] == "12 clients: 78 sessions, 6 assistants"
    assert work_table(ctx.run_id) in plan.details[2]
    assert not (await step.check(ctx)).done

    lines: list[str] = []
    outcome = await step.run(ctx, lines.append)

    assert lines[0].startswith("new keys for 12 clients made in the target (rollback_bot.")
    batches = [line for line in lines if line.startswith("batch ")]
    assert len(batches) == outcome.facts["batches"] >= 6, "the sessions span several ranges"
    assert [int(re.match(r"batch (\d+): ", line)[1]) for line in batches] \
        == list(range(1, len(batches) + 1))
    assert batches[-1].endswith("(100% of pages)")
    assert all(re.search(r"re-keyed in \d+\.\d\d s \(\d+% of pages\)$", line) for line in batches)
    assert lines[-1] == "sweep: no row written meanwhile"
    assert {k: outcome.facts[k] for k in ("clients_rotated", "sessions_updated",
                                          "assistants_updated")} == {
        "clients_rotated": 12, "sessions_updated": 78, "assistants_updated": 6}
    clients = keys_by_old_hash(before, await owned_rows(phase2_target_url))
    keys = assert_one_key_per_client(clients, await ctx.rotations.mapping(ctx.run_id))
    assert all(UUID.match(key) for key in keys)
    assert await work_tables(phase2_target_url) == [], "work table and schema dropped"
    check = await step.check(ctx)
    assert check.done, check.reason
    emitted = "\n".join(lines) + outcome.summary + repr(dict(outcome.facts))
    assert not FULL_HASH.search(emitted), "at most hash prefixes in the output"
    assert_no_secret(emitted + caplog.text, keys)


async def test_client_owning_only_assistants_gets_a_token_key(
    phase2_target_url: str, tmp_path: Path,
) -> None:
    only_assistants = await add_assistants_only_client(phase2_target_url, rows=2)
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path, key_format="token"))
    before = await owned_rows(phase2_target_url)
    assert (await RotateKeysStep().plan(ctx)).facts["clients"] == 7
    outcome = await RotateKeysStep().run(ctx, lambda _line: None)
    assert outcome.facts["clients_rotated"] == 7 and outcome.facts["assistants_updated"] == 8
    clients = keys_by_old_hash(before, await owned_rows(phase2_target_url))
    keys = assert_one_key_per_client(clients, await ctx.rotations.mapping(ctx.run_id))
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", key) for key in keys)
    assert len(clients[only_assistants]) == 1


class DyingSink:
    """The bot dies right after the step emits its `die_at`-th line (that work committed)."""

    def __init__(self, die_at: int = 1, prefix: str = "") -> None:
        self.lines: list[str] = []
        self.die_at, self.prefix = die_at, prefix

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if len([x for x in self.lines if x.startswith(self.prefix)]) == self.die_at:
            raise asyncio.CancelledError


async def test_crash_after_the_keys_were_made_resumes_with_the_same_keys(
    phase2_target_url: str, tmp_path: Path,
) -> None:
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path))
    before = await owned_rows(phase2_target_url)
    sink = DyingSink()
    with pytest.raises(asyncio.CancelledError):
        await RotateKeysStep().run(ctx, sink)
    assert sink.lines[0].startswith("new keys for 6 clients")
    made = await work_keys(phase2_target_url, ctx.run_id)
    ledger = await ctx.rotations.mapping(ctx.run_id)
    assert len(made) == len(ledger) == 6
    assert await owned_rows(phase2_target_url) == before, "no row touched yet"
    assert not (await RotateKeysStep().check(ctx)).done

    lines: list[str] = []
    outcome = await RotateKeysStep().run(ctx, lines.append)
    assert outcome.facts["clients_rotated"] == 6
    assert await ctx.rotations.mapping(ctx.run_id) == ledger, "the same keys, not new ones"
    clients = keys_by_old_hash(before, await owned_rows(phase2_target_url))
    keys = assert_one_key_per_client(clients, ledger)
    assert keys == set(made.values())
    assert (await RotateKeysStep().check(ctx)).done


async def test_crash_between_page_ranges_keeps_one_key_per_client(
    phase2_target_url: str, tmp_path: Path,
) -> None:
    """Clients spread over many pages: some of their rows are re-keyed before the crash, the
    rest after; every client still ends with one key on all its rows."""
    await add_padded_clients(phase2_target_url)
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path, rotation_batch_pages=1,
                                          rotation_max_batch_pages=1, rotation_workers=1))
    before = await owned_rows(phase2_target_url)
    with pytest.raises(asyncio.CancelledError):
        await RotateKeysStep().run(ctx, DyingSink(die_at=3, prefix="batch "))
    halfway = await owned_rows(phase2_target_url)
    split = [old for old, found in keys_by_old_hash(before, halfway).items() if len(found) > 1]
    assert split, "some client has rows on both sides of the crash"

    outcome = await RotateKeysStep().run(ctx, lambda _line: None)
    assert outcome.facts["clients_rotated"] == 12
    clients = keys_by_old_hash(before, await owned_rows(phase2_target_url))
    assert_one_key_per_client(clients, await ctx.rotations.mapping(ctx.run_id))
    assert (await RotateKeysStep().check(ctx)).done


async def test_a_lost_work_table_is_rebuilt_from_the_rows_already_re_keyed(
    phase2_target_url: str, tmp_path: Path,
) -> None:
    """Someone dropped the work table after a crash: keys already on rows are adopted back;
    ledger entries that never reached a row are forgotten and their clients get new keys."""
    await add_padded_clients(phase2_target_url)
    await add_padded_clients(phase2_target_url, clients=2, tag="late")  # on the last pages
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path, rotation_batch_pages=1,
                                          rotation_max_batch_pages=1, rotation_workers=1))
    before = await owned_rows(phase2_target_url)
    with pytest.raises(asyncio.CancelledError):
        await RotateKeysStep().run(ctx, DyingSink(die_at=2, prefix="batch "))
    conn = await asyncpg.connect(libpq_url(phase2_target_url))
    try:
        await conn.execute(f"DROP TABLE {work_table(ctx.run_id)}")
    finally:
        await conn.close()
    untouched = {old for old, found in keys_by_old_hash(
        before, await owned_rows(phase2_target_url)).items() if found == {(old, None)}}
    assert untouched, "some client had no row re-keyed before the crash"

    lines: list[str] = []
    await RotateKeysStep().run(ctx, lines.append)
    assert lines[0] == f"{len(untouched)} ledger entries from an interrupted run were discarded"
    clients = keys_by_old_hash(before, await owned_rows(phase2_target_url))
    assert_one_key_per_client(clients, await ctx.rotations.mapping(ctx.run_id))
    assert (await RotateKeysStep().check(ctx)).done


async def test_rows_written_with_an_old_hash_meanwhile_are_swept(
    phase2_target_url: str, tmp_path: Path,
) -> None:
    """The restarted Phase 2 service writes a row with a client's OLD key while pages are
    being rewritten (after the last page was measured): the sweep re-keys it."""
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path, rotation_workers=1))
    before = await owned_rows(phase2_target_url)
    old_hash = next(iter(before.values()))[0]

    def service_writes(line: str) -> None:
        if line.startswith("batch 1: "):
            subprocess.run(["psql", "-q", libpq_url(phase2_target_url), "-c",
                            "INSERT INTO sessions (id, model, owner_api_key, owner_api_key_hash)"
                            f" VALUES (gen_random_uuid(), 'claude-sonnet-4', 'old-plaintext-key',"
                            f" '{old_hash}')"], check=True)
        lines.append(line)

    lines: list[str] = []
    outcome = await RotateKeysStep().run(ctx, service_writes)
    assert lines[-1] == "sweep: 1 row written meanwhile re-keyed"
    after = await owned_rows(phase2_target_url)
    new_hash = (await ctx.rotations.mapping(ctx.run_id))[old_hash]
    assert not [row for row, (h, _) in after.items() if h == old_hash], "no row keeps the old"
    keys = {k for h, k in after.values() if h == new_hash}
    assert len(keys) == 1 and "old-plaintext-key" not in keys
    assert outcome.facts["sessions_updated"] == 19


class LostAfterRecord(SqlRotationLedger):
    """The ledger commits the keys' hashes, then the bot dies before touching any row."""

    async def record(self, run_id: str, old_to_new: Mapping[str, str]) -> None:
        await super().record(run_id, old_to_new)
        raise ConnectionError("bot died after the ledger commit")


async def test_crash_after_the_ledger_commit_resumes_through_the_sql_ledger(
    phase2_target_url: str, tmp_path: Path, bot_db_url: str,
    bot_sessionmaker: async_sessionmaker[AsyncSession], sql_run_id: str,
) -> None:
    settings = sandbox_settings(phase2_target_url, tmp_path)
    ctx = sql_context(settings, bot_sessionmaker, sql_run_id)
    dying = StepContext(sql_run_id, settings, LostAfterRecord(bot_sessionmaker),
                        ctx.notifications)
    before = await owned_rows(phase2_target_url)
    with pytest.raises(ConnectionError):
        await RotateKeysStep().run(dying, lambda _line: None)
    recorded = await ctx.rotations.mapping(sql_run_id)
    assert len(recorded) == 6

    lines: list[str] = []
    outcome = await RotateKeysStep().run(ctx, lines.append)
    assert not any("discarded" in line for line in lines), "the work table kept the keys"
    assert outcome.facts["clients_rotated"] == 6
    assert await ctx.rotations.mapping(sql_run_id) == recorded
    clients = keys_by_old_hash(before, await owned_rows(phase2_target_url))
    keys = assert_one_key_per_client(clients, recorded)
    assert (await RotateKeysStep().check(ctx)).done

    dump = await asyncio.create_subprocess_exec(
        "pg_dump", "--data-only", libpq_url(bot_db_url), stdout=asyncio.subprocess.PIPE)
    bot_db_text = (await dump.communicate())[0].decode()
    assert all(new in bot_db_text for new in recorded.values())
    assert_no_secret(bot_db_text, keys)


async def test_ledger_entry_is_kept_unless_its_batch_provably_rolled_back(
    phase2_target_url: str, tmp_path: Path,
) -> None:
    """A ledger entry whose client has no pending row left is kept (only hashes are compared)."""
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path))
    await RotateKeysStep().run(ctx, lambda _line: None)
    mapping = await ctx.rotations.mapping(ctx.run_id)
    old, new = next(iter(mapping.items()))
    conn = await asyncpg.connect(libpq_url(phase2_target_url))
    try:  # the client's rows vanish (deleted by the service): no longer provably rolled back
        await conn.execute("DELETE FROM assistants WHERE owner_api_key_hash = $1", new)
        await conn.execute("DELETE FROM session_messages WHERE session_id IN"
                           " (SELECT id FROM sessions WHERE owner_api_key_hash = $1)", new)
        await conn.execute("DELETE FROM sessions WHERE owner_api_key_hash = $1", new)
    finally:
        await conn.close()
    outcome = await RotateKeysStep().run(ctx, lambda _line: None)
    assert outcome.facts["clients_rotated"] == 0
    assert (await ctx.rotations.mapping(ctx.run_id))[old] == new


async def test_check_on_a_target_without_owned_rows(
    phase2_target_url: str, tmp_path: Path,
) -> None:
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path))
    conn = await asyncpg.connect(libpq_url(phase2_target_url))
    try:
        await conn.execute("UPDATE sessions SET owner_api_key_hash = NULL")
        await conn.execute("UPDATE assistants SET owner_api_key_hash = NULL")
    finally:
        await conn.close()
    check = await RotateKeysStep().check(ctx)
    assert check.done and "no client-owned rows" in check.reason
    assert (await RotateKeysStep().run(ctx, lambda _l: None)).facts["batches"] == 0


async def test_a_target_still_at_phase3_is_refused_in_one_sentence(
    target_db_url: str, tmp_path: Path,
) -> None:
    ctx = memory_context(sandbox_settings(target_db_url, tmp_path))
    with pytest.raises(StepError, match="cannot count clients on the target: 42703"):
        await RotateKeysStep().plan(ctx)


async def test_a_target_slow_to_write_gets_short_transactions(
    phase2_target_url: str, tmp_path: Path,
) -> None:
    """Every row of the target costs 20 ms to write (a trigger sleeps): the first range runs
    past 1.8 times the target and is cut short (rolled back); after that each range is cut to
    what the target time allows. Sleeping only adds time, so
    the sizes are bounded whatever the machine's speed: no timing is asserted."""
    await add_padded_clients(phase2_target_url, clients=6, rows_each=20)
    conn = await asyncpg.connect(libpq_url(phase2_target_url))
    try:
        await conn.execute("""
            CREATE FUNCTION slow_write() RETURNS trigger LANGUAGE plpgsql AS
              $$ BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END $$;
            CREATE TRIGGER slow_write BEFORE UPDATE ON sessions
              FOR EACH ROW EXECUTE FUNCTION slow_write()""")
        per_page = [r["n"] for r in await conn.fetch("""
            SELECT (ctid::text::point)[0] AS page, count(*) AS n FROM sessions
             WHERE owner_api_key_hash IS NOT NULL GROUP BY 1 ORDER BY 1""")]
    finally:
        await conn.close()
    fewest = min(per_page[:-1])  # the last page may be partly filled; no range comes after it
    most = int(0.25 / (fewest * 0.02))
    assert most < 8, "the slow-down must be large enough to show"
    ctx = memory_context(sandbox_settings(
        phase2_target_url, tmp_path, rotation_target_txn_seconds=0.25, rotation_batch_pages=8,
        rotation_workers=1))
    before = await owned_rows(phase2_target_url)
    lines: list[str] = []
    await RotateKeysStep().run(ctx, lines.append)

    def sizes(kind: str) -> list[int]:
        return [int(last.replace(",", "")) - int(first.replace(",", "")) + 1
                for first, last in re.findall(kind + r": sessions pages ([\d,]+)-([\d,]+) of",
                                              "\n".join(lines))]

    cut_short, done = sizes(r"cut short after \d+\.\d\d s"), sizes(r"batch \d+")
    assert cut_short[0] == 8, "the first range: ROTATION_BATCH_PAGES, too long: cut short"
    assert all(size < 8 for size in cut_short[1:]), "cut again by what it cost"
    assert len(done) >= 4 and all(size <= most for size in done), done
    clients = keys_by_old_hash(before, await owned_rows(phase2_target_url))
    assert_one_key_per_client(clients, await ctx.rotations.mapping(ctx.run_id))


async def test_a_row_lock_held_by_the_service_cuts_ranges_short_until_it_goes(
    phase2_target_url: str, tmp_path: Path,
) -> None:
    """The live service holds one row: the range that waits for it is cancelled at 1.8 times
    the target (its row locks released) and retried in smaller ranges until one page waits;
    once the service lets go, every client ends with one key."""
    await add_padded_clients(phase2_target_url)
    holder = await asyncpg.connect(libpq_url(phase2_target_url))
    hold = holder.transaction()
    await hold.start()
    await holder.execute("SELECT 1 FROM sessions WHERE owner_api_key_hash IS NOT NULL "
                         "ORDER BY ctid DESC LIMIT 1 FOR UPDATE")
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path,
                                          rotation_target_txn_seconds=0.1, rotation_workers=1))
    before = await owned_rows(phase2_target_url)
    lines: list[str] = []
    run = asyncio.create_task(RotateKeysStep().run(ctx, lines.append))
    try:
        for _ in range(600):  # a deadline, polled
            if sum("cut short" in line for line in lines) >= 3:
                break
            await asyncio.sleep(0.05)
        assert sum("cut short" in line for line in lines) >= 3, lines
        assert not run.done(), "still waiting for the row"
    finally:
        await hold.rollback()
        await holder.close()
    outcome = await run
    assert outcome.facts["transactions_cut_short"] >= 3
    assert all(line.endswith("rolled back, retried in smaller ranges")
               for line in lines if line.startswith("cut short"))
    clients = keys_by_old_hash(before, await owned_rows(phase2_target_url))
    assert_one_key_per_client(clients, await ctx.rotations.mapping(ctx.run_id))
