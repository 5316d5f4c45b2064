"""Slack misbehaving never delays a step or loses an entry of the incident log."""

from __future__ import annotations

import asyncio

from bot.domain.states import StepStatus
from bot.domain.steps import StepName
from tests.engine.fake_steps import ScriptedStep
from tests.slack.harness import SlackBot
from tests.slack.test_slack_front import approve, start_rollback


async def test_429_and_500_delay_the_thread_not_the_step(
    bot: SlackBot, steps: dict[StepName, ScriptedStep]
) -> None:
    hold = asyncio.Event()
    steps[StepName.BACKUP].hold = hold
    root = await start_rollback(bot)
    message = await approve(bot, 1, "U_BOB", "U_CAROL")
    await asyncio.wait_for(steps[StepName.BACKUP].entered.wait(), 10)
    bot.fake.fail_next("chat.update", status=429, times=2, retry_after=1)
    bot.fake.fail_next("chat.postMessage", status=500, times=3)
    hold.set()  # the step finishes while Slack refuses writes
    await bot.engine.wait_idle()  # the step never waits for Slack
    view = await bot.engine.run_view(await bot.the_run_id())
    assert view.steps[0].status is StepStatus.SUCCEEDED
    assert view.steps[1].status is StepStatus.AWAITING_APPROVAL
    assert bot.fake.faults["chat.postMessage"].times > 0, "Slack was still refusing meanwhile"
    # Afterwards every entry reaches the thread, once, in order.
    await bot.fake.wait_for(lambda: "succeeded" in message.text, within=30)
    second = await bot.fake.wait_for(lambda: bot.step_messages(2), within=30)
    assert len(second) == 1 and message.ts < second[0].ts
    assert [m.ts for m in bot.fake.thread(root.channel, root.ts)] == [message.ts, second[0].ts]
    assert bot.fake.faults["chat.update"].times == 0
    assert bot.fake.faults["chat.postMessage"].times == 0


async def test_long_output_is_attached_as_a_file_when_the_step_ends(
    bot: SlackBot, steps: dict[StepName, ScriptedStep]
) -> None:
    steps[StepName.BACKUP].lines = 500
    root = await start_rollback(bot)
    message = await approve(bot, 1, "U_BOB", "U_CAROL")
    await bot.fake.wait_for(lambda: "succeeded" in message.text)
    upload = await bot.fake.wait_for(lambda: next(
        (u for u in bot.fake.uploads.values() if u.get("filename") == "backup-output.log"
         and u.get("content")), None))
    lines = upload["content"].splitlines()
    assert lines == [f"backup line {i}" for i in range(1, 501)]
    assert upload["thread_ts"] == root.ts
