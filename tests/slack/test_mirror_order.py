"""What the thread gets first when writes queue up behind the one-write-per-second budget."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.steps import StepName
from tests.engine.fake_steps import ScriptedStep, as_steps
from tests.slack.harness import SlackBot, message_text, running_bot
from tests.slack.test_slack_front import approve, start_rollback
from tests.slackwire.fake_web_api import FakeSlack, RecordedCall

CHANNEL_WRITES = ("chat.postMessage", "chat.update", "files.completeUploadExternal")


@pytest.fixture
async def queued_bot(
    fake_slack: FakeSlack, bot_sessionmaker: async_sessionmaker[AsyncSession],
    steps: dict[StepName, ScriptedStep],
) -> AsyncIterator[SlackBot]:
    """Writes spaced widely enough that a quick step ends while its redraws still queue."""
    async with running_bot(fake_slack, bot_sessionmaker, as_steps(steps),
                           slack_write_interval_seconds=0.5) as running:
        yield running


def position(writes: list[RecordedCall], matches: Callable[[RecordedCall], bool]) -> int:
    return next(i for i, call in enumerate(writes) if matches(call))


async def test_attached_output_comes_before_the_final_redraw_and_the_next_step(
    queued_bot: SlackBot, steps: dict[StepName, ScriptedStep]
) -> None:
    """When a step ends, its file goes first: it holds every line, a redraw only the newest.
    The step's final state still comes before the next step's request for approval, and the
    board after both."""
    bot = queued_bot
    hold = asyncio.Event()
    steps[StepName.BACKUP].lines = 500
    steps[StepName.BACKUP].hold = hold
    root = await start_rollback(bot)
    message = await approve(bot, 1, "U_BOB", "U_CAROL")
    await asyncio.wait_for(steps[StepName.BACKUP].entered.wait(), 10)
    await bot.fake.wait_for(lambda: message.text.endswith("running"))
    ended_at = len(bot.fake.calls)
    hold.set()
    await bot.fake.wait_for(lambda: message.text.endswith("succeeded") and bot.step_messages(2)
                            and "succeeded" in message_text(bot.root()))  # type: ignore[arg-type]
    upload = await bot.fake.wait_for(lambda: next(
        (u for u in bot.fake.uploads.values() if u.get("thread_ts")), None))
    assert upload["thread_ts"] == root.ts
    assert upload["content"].splitlines() == [f"backup line {i}" for i in range(1, 501)]

    # Writes decided while the step still ran show it running; of the rest, in order:
    after_end = [c for c in bot.fake.calls[ended_at:] if c.method in CHANNEL_WRITES
                 and "running" not in json.dumps(c.args).lower()]
    shared = position(after_end, lambda c: c.method == "files.completeUploadExternal")
    final_state = position(after_end, lambda c: c.method == "chat.update"
                           and c.args.get("ts") == message.ts)
    next_step = position(after_end, lambda c: c.method == "chat.postMessage"
                         and c.args.get("text", "").startswith("Step 2/6"))
    board = position(after_end, lambda c: c.method == "chat.update" and c.args.get("ts") == root.ts)
    assert shared == 0
    assert shared < final_state < next_step < board
    thread = bot.fake.thread(root.channel, root.ts)
    assert [m.ts for m in thread] == [message.ts, bot.step_messages(2)[0].ts]


async def test_short_output_attaches_nothing_and_the_thread_moves_on(
    bot: SlackBot, steps: dict[StepName, ScriptedStep]
) -> None:
    """Output the message can show whole is not attached; its log entry is passed over."""
    steps[StepName.BACKUP].lines = 3
    await start_rollback(bot)
    message = await approve(bot, 1, "U_BOB", "U_CAROL")
    await bot.fake.wait_for(lambda: message.text.endswith("succeeded") and bot.step_messages(2))
    assert not bot.fake.calls_to("files.getUploadURLExternal")
