"""The bot's Slack front with scripted steps, served over HTTP against the fake Slack."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.steps import StepName
from tests.engine.fake_steps import ScriptedStep, as_steps, scripted_steps
from tests.slack.harness import SlackBot, running_bot
from tests.slackwire.fake_web_api import FakeSlack


@pytest.fixture
def steps() -> dict[StepName, ScriptedStep]:
    return scripted_steps()


@pytest.fixture
async def bot(
    fake_slack: FakeSlack, bot_sessionmaker: async_sessionmaker[AsyncSession],
    steps: dict[StepName, ScriptedStep],
) -> AsyncIterator[SlackBot]:
    async with running_bot(fake_slack, bot_sessionmaker, as_steps(steps)) as running:
        yield running
