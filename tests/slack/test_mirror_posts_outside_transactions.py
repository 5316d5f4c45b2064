"""The thread's posts are made with no database transaction open (#28): a board or step message
that Slack is slow to take holds no lock on the run, so the clicks and steps that need its row
go on; the post is recorded after, and a copy that lost the race to another replica goes."""

from __future__ import annotations

import asyncio

import asyncpg

from bot.slack.thread_writer import Identity
from bot.urls import libpq_url
from tests.slack.harness import CHANNEL, SlackBot
from tests.slack.test_slack_front import approve, start_rollback
from tests.slackwire.fake_web_api import FakeSlack
from tests.slackwire.methods import METHODS


async def lockable(url: str, table: str, key: str) -> bool:
    """Whether another session could lock the row now (a click's transaction does)."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await conn.execute(f"SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE NOWAIT", key)
    except asyncpg.LockNotAvailableError:
        return False
    finally:
        await conn.close()
    return True


async def idle_in_transaction(url: str) -> int:
    """Sessions of the bot's database sitting in an open transaction."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%'"))
    finally:
        await conn.close()


async def held_posts(fake: FakeSlack, count: int) -> None:
    await fake.wait_for(lambda: len(fake.calls_to("chat.postMessage")) >= count)


async def start_with_the_board_held(bot: SlackBot) -> tuple[asyncio.Event, str]:
    release = bot.fake.hold("chat.postMessage")
    assert (await bot.command("Phase 3 broke auth"))[0] == 200
    await bot.fake.wait_for(bot.start_form)
    assert (await bot.submit_start("U_ALICE", "Phase 3 broke auth"))[0] == 200
    await held_posts(bot.fake, 1)
    return release, await bot.the_run_id()


async def test_a_board_slack_is_slow_to_take_locks_nothing(bot: SlackBot, bot_db_url: str
                                                           ) -> None:
    release, run_id = await start_with_the_board_held(bot)
    assert await lockable(bot_db_url, "rollback_runs", run_id), "the run's row is free"
    assert await idle_in_transaction(bot_db_url) == 0
    release.set()
    root = await bot.fake.wait_for(bot.root)
    await bot.fake.wait_for(lambda: bot.step_messages(1))
    assert len(bot.fake.roots(CHANNEL)) == 1
    conn = await asyncpg.connect(libpq_url(bot_db_url))
    try:
        recorded = await conn.fetchval("SELECT thread_ts FROM rollback_runs WHERE id = $1",
                                       run_id)
    finally:
        await conn.close()
    assert recorded == root.ts


async def test_a_step_message_slack_is_slow_to_take_locks_nothing(
    bot: SlackBot, bot_db_url: str
) -> None:
    await start_rollback(bot)
    await bot.fake.wait_for(lambda: bot.step_messages(1))
    posts = len(bot.fake.calls_to("chat.postMessage"))
    release = bot.fake.hold("chat.postMessage")
    # Step 1 approved: the engine's own writes go on while the next message is not yet posted.
    message = bot.step_messages(1)[0]
    await approve(bot, 1, "U_BOB", "U_CAROL")
    await held_posts(bot.fake, posts + 1)  # step 2's request for approval, held at Slack
    conn = await asyncpg.connect(libpq_url(bot_db_url))
    try:
        held = await conn.fetchval(
            "SELECT id::text FROM step_executions WHERE message_ts IS NULL")
    finally:
        await conn.close()
    assert held is not None
    assert await lockable(bot_db_url, "step_executions", held)
    assert await idle_in_transaction(bot_db_url) == 0
    release.set()
    await bot.fake.wait_for(lambda: bot.step_messages(2))
    assert "succeeded" in message.text
    assert len(bot.step_messages(2)) == 1


async def test_a_copy_that_lost_the_race_is_deleted(bot: SlackBot, bot_db_url: str) -> None:
    """While our post hangs (our claim on the thread lapsing), another replica posts the board
    and records it: ours, when Slack finally takes it, is deleted and the run goes on in the
    recorded thread."""
    release, run_id = await start_with_the_board_held(bot)
    theirs = METHODS["chat.postMessage"](bot.fake, {
        "channel": CHANNEL, "text": "Phase 3 rollback in progress (the other replica's board)",
        "metadata": Identity(run_id, "board").metadata()})
    conn = await asyncpg.connect(libpq_url(bot_db_url))
    try:
        await conn.execute("UPDATE rollback_runs SET channel_id = $1, thread_ts = $2 "
                           "WHERE id = $3", CHANNEL, theirs["ts"], run_id)
    finally:
        await conn.close()
    release.set()
    deleted = await bot.fake.wait_for(lambda: bot.fake.calls_to("chat.delete"))
    assert [m.ts for m in bot.fake.roots(CHANNEL)] == [theirs["ts"]], "one board: theirs"
    assert deleted[0].args["ts"] != theirs["ts"]
    await bot.fake.wait_for(lambda: bot.step_messages(1))  # the run goes on in their thread
    board = bot.fake.messages[theirs["ts"]]
    await bot.fake.wait_for(lambda: "LOSSY" in str(board.blocks))  # the recorded one, drawn
