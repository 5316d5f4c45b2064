"""A held lock on the target's `sessions` table: Approve on step 4 answers "target busy" within
the plan deadline, changes nothing, and the reply pool keeps answering everyone. A plan slow for
another reason (the client directory) is not called "target busy": the reply names what was."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.approvals import REFUSAL_TEXT, Refusal
from bot.domain.states import StepStatus
from bot.domain.step_protocol import Step
from bot.domain.steps import STEP_ORDER, StepName
from bot.slack.actions import ActionId
from bot.urls import libpq_url
from sandbox.migrate import migrate
from steps.email_clients import EmailClientsStep
from steps.rotate_keys import RotateKeysStep
from tests.engine.fake_steps import scripted_steps
from tests.engine.test_engine_flow import approve_twice, start
from tests.slack.harness import CHANNEL, CHANNEL_NAME, SECRET, SlackBot, button_value, running_bot
from tests.slackwire.fake_web_api import FakeSlack
from tests.slackwire.requests import block_actions, sign, slash_command
from tests.steps.sandbox_settings import sandbox_settings


async def send(bot: SlackBot, body: bytes) -> int:
    """Post without waiting for the handed-over work."""
    async with bot.http.post(bot.url, data=body, headers=sign(body, SECRET)) as answer:
        return answer.status


async def test_a_locked_target_makes_approve_answer_busy_and_frees_the_pool(
    fake_slack: FakeSlack, bot_sessionmaker: async_sessionmaker[AsyncSession],
    target_db_url: str, tmp_path: Path,
) -> None:
    await migrate(target_db_url, "20260201_000006", down=True)  # as after step 2
    steps: dict[StepName, Step] = {**scripted_steps(), StepName.ROTATE_KEYS: RotateKeysStep()}
    target = sandbox_settings(target_db_url, tmp_path)
    async with running_bot(fake_slack, bot_sessionmaker, steps, plan_timeout_seconds=1.5,
                           target_database_url=target_db_url,
                           backup_dir=target.backup_dir) as bot:
        run_id = await start(bot.engine)
        for step in STEP_ORDER[:3]:
            await approve_twice(bot.engine, run_id, step)
        message = await fake_slack.wait_for(
            lambda: next((m for m in reversed(bot.step_messages(4))
                          if button_value(m, ActionId.APPROVE)), None))
        value = button_value(message, ActionId.APPROVE)
        assert value is not None
        plan_before = (await bot.engine.run_view(run_id)).steps[3].plan

        locker = await asyncpg.connect(libpq_url(target_db_url))
        try:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
            clicks = bot.front.background.limit + 2  # more than the pool holds at once
            for n in range(clicks):
                user = ("U_BOB", "U_CAROL")[n % 2]
                assert await send(bot, block_actions(user, ActionId.APPROVE.value, value,
                                                     CHANNEL, message.ts,
                                                     message.thread_ts)) == 200
            help_body = slash_command("help", "U_ALICE", CHANNEL, CHANNEL_NAME)
            async with bot.http.post(bot.url, data=help_body,
                                     headers=sign(help_body, SECRET)) as answer:
                assert "/rollback-phase3" in await answer.text()  # help is the ack itself
            busy = (f"{REFUSAL_TEXT[Refusal.TARGET_BUSY]} (step 4 (rotate_keys): waiting on "
                    "the target database took longer than 1.5 s)")
            # All answered while the lock is still held: nobody waited for the lock.
            await fake_slack.wait_for(lambda: len([t for u in ("U_BOB", "U_CAROL")
                                                   for t in bot.replies(u)
                                                   if busy in t]) == clicks, within=60)
            assert await locker.fetchval("SELECT count(*) FROM pg_locks WHERE granted AND "
                                         "mode = 'AccessExclusiveLock' AND pid = "
                                         "pg_backend_pid()") >= 1, "the lock was held throughout"
        finally:
            await locker.close()
        view = await bot.engine.run_view(run_id)
        rotate = view.steps[3]
        assert rotate.status is StepStatus.AWAITING_APPROVAL and rotate.approvers == ()
        assert rotate.plan == plan_before, "a busy target changed nothing"


async def test_a_directory_that_cannot_be_read_in_time_is_named_not_the_target(
    fake_slack: FakeSlack, bot_sessionmaker: async_sessionmaker[AsyncSession],
    stuck_directory: Path,
) -> None:
    steps: dict[StepName, Step] = {**scripted_steps(), StepName.EMAIL_CLIENTS: EmailClientsStep()}
    async with running_bot(fake_slack, bot_sessionmaker, steps, plan_timeout_seconds=1,
                           client_directory=stuck_directory) as bot:
        run_id = await start(bot.engine)
        for step in STEP_ORDER[:4]:
            await approve_twice(bot.engine, run_id, step)
        message = await fake_slack.wait_for(
            lambda: next((m for m in reversed(bot.step_messages(5))
                          if button_value(m, ActionId.APPROVE)), None))
        value = button_value(message, ActionId.APPROVE)
        assert value is not None
        assert await send(bot, block_actions("U_BOB", ActionId.APPROVE.value, value, CHANNEL,
                                             message.ts, message.thread_ts)) == 200
        slow = "step 5 (email_clients): loading the client directory took longer than 1 s"
        reply = await fake_slack.wait_for(
            lambda: next((t for t in bot.replies("U_BOB") if "Refused" in t), None), within=30)
        assert slow in reply and "target" not in reply, reply
        view = await bot.engine.run_view(run_id)
        assert view.steps[4].status is StepStatus.AWAITING_APPROVAL
        assert view.steps[4].approvers == ()
