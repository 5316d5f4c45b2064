"""Every button answers the clicker when who may act cannot be read from Slack (the approver
user group unreadable: PeopleLookupFailed), instead of leaving the click unanswered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_events
from bot.domain.events import EventKind, Source
from bot.domain.steps import StepName
from bot.engine.engine import Actor
from bot.slack.actions import ActionId
from tests.engine.fake_steps import ScriptedStep, as_steps
from tests.slack.harness import CHANNEL, SlackBot, button_value, running_bot


@pytest.fixture
async def unreadable_group_bot(
    fake_slack: object, bot_sessionmaker: async_sessionmaker[AsyncSession],
    steps: dict[StepName, ScriptedStep],
) -> AsyncIterator[SlackBot]:
    # The group is not known to the (fake) workspace: usergroups.users.list is refused.
    async with running_bot(fake_slack, bot_sessionmaker, as_steps(steps),  # type: ignore[arg-type]
                           approver_user_ids="", approver_usergroup_id="S_ONCALL") as running:
        yield running


async def test_escalate_answers_when_the_approver_group_cannot_be_read(
    unreadable_group_bot: SlackBot,
) -> None:
    bot = unreadable_group_bot
    started = await bot.engine.start_run(Actor("U_ALICE", "alice", Source.SLACK, True),
                                         "Phase 3 broke auth", CHANNEL)
    assert started.run_id
    await bot.fake.wait_for(lambda: bot.root() is not None
                            and button_value(bot.root(), ActionId.ESCALATE) is not None)  # type: ignore[arg-type]
    status, _ = await bot.click("U_BOB", ActionId.ESCALATE, bot.root())  # type: ignore[arg-type]
    assert status == 200
    await bot.fake.wait_for(lambda: bool(bot.fake.calls_to("chat.postEphemeral")))
    told = [c.args for c in bot.fake.calls_to("chat.postEphemeral")]
    assert told[-1]["user"] == "U_BOB"
    assert "who may approve could not be checked" in told[-1]["text"]
    assert "APPROVER_USERGROUP_ID is not a user group" in told[-1]["text"]
    async with bot.engine.sessions() as session:
        assert await repo_events.events_of_kind(session, started.run_id,
                                                EventKind.ESCALATED) == []
