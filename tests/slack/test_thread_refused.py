"""What Slack refuses for good is handled, not retried: the thread goes on, and a run never
stays "active" because Slack refused a write."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from bot.db.models import SlackRefusal
from bot.domain.events import Source
from bot.domain.states import RunStatus
from bot.domain.steps import StepName
from bot.engine.engine import Actor
from tests.engine.fake_steps import ScriptedStep
from tests.slack.harness import CHANNEL, SlackBot
from tests.slack.test_slack_front import approve, start_rollback


async def refusals(bot: SlackBot) -> list[tuple[str, str]]:
    async with bot.engine.sessions() as session:
        rows = (await session.execute(select(SlackRefusal).order_by(SlackRefusal.id))).scalars()
        return [(r.error, r.handled) for r in rows]


async def test_a_deleted_step_message_is_posted_again(
    bot: SlackBot, steps: dict[StepName, ScriptedStep]
) -> None:
    hold = asyncio.Event()
    steps[StepName.BACKUP].hold = hold
    root = await start_rollback(bot)
    message = await approve(bot, 1, "U_BOB", "U_CAROL")
    await bot.fake.wait_for(lambda: message.text.endswith("running"))
    bot.fake.workspace.delete_message(message.ts)  # someone deleted it
    hold.set()
    again = await bot.fake.wait_for(lambda: next(
        (m for m in bot.step_messages(1) if m.ts != message.ts and "succeeded" in m.text),
        None), within=30)
    second = await bot.fake.wait_for(lambda: bot.step_messages(2), within=30)
    assert [m.ts for m in bot.fake.thread(CHANNEL, root.ts)] == [again.ts, second[0].ts]
    assert ("message_not_found", "the step message is posted again") in await refusals(bot)


async def test_not_in_channel_tells_the_initiator_and_frees_the_run(bot: SlackBot) -> None:
    """The bot was removed from the channel: the root cannot be posted. The initiator hears
    it by a direct message, the refusal is recorded, and the run is stopped (nobody could
    approve it), so a new rollback can start."""
    bot.fake.workspace.remove_bot(CHANNEL)
    answer = await bot.engine.start_run(Actor("U_ALICE", "alice", Source.SLACK, True),
                                        "Phase 3 broke auth", CHANNEL)
    assert answer.run_id
    dm = await bot.fake.wait_for(lambda: [m for m in bot.fake.messages.values()
                                          if m.channel == "D_BOT_U_ALICE"], within=30)
    assert "not_in_channel" in dm[0].text and answer.run_id in dm[0].text

    async def stopped() -> bool:
        view = await bot.engine.run_view(answer.run_id or "")
        return view.status is RunStatus.ABORTED
    deadline = asyncio.get_running_loop().time() + 30
    while not await stopped():
        assert asyncio.get_running_loop().time() < deadline, "the run stayed active"
        await asyncio.sleep(0.1)
    assert await bot.engine.active_run_id() is None
    assert not bot.fake.roots(CHANNEL)
    recorded = await refusals(bot)
    assert recorded[0][0] == "not_in_channel"
    assert "initiator was told" in recorded[0][1]
    assert len(bot.fake.calls_to("chat.postMessage")) < 10, "refused writes are not retried"


async def test_status_brings_back_a_deleted_board(bot: SlackBot) -> None:
    """Someone deleted the root (the status board): `/rollback-phase3 status` draws the board
    again; the rollback gets a new root in the channel and its waiting step under it."""
    root = await start_rollback(bot)
    await waiting_for_step_1(bot)
    bot.fake.workspace.delete_message(root.ts)
    assert (await bot.command("status", user="U_BOB"))[0] == 200
    new_root = await bot.fake.wait_for(lambda: next(
        (m for m in bot.fake.roots(CHANNEL) if m.ts != root.ts), None), within=30)
    assert "rollback" in new_root.text.lower()
    # The step waiting for approval is drawn again under the new root.
    await bot.fake.wait_for(lambda: any(m.text.startswith("Step 1/6")
                                        for m in bot.fake.thread(CHANNEL, new_root.ts)), within=30)
    await bot.fake.wait_for(lambda: bool(bot.replies("U_BOB")), within=30)


async def waiting_for_step_1(bot: SlackBot) -> None:
    await bot.fake.wait_for(lambda: bot.step_messages(1), within=30)
