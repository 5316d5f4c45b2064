"""ROLLBACK_CHANNEL as a channel id: a channel that merely has the name (e.g. the channel
deleted and created again) is refused; by name (the default) the name matches."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.steps import StepName
from bot.settings import Settings
from bot.slack.people import is_rollback_channel
from tests.engine.fake_steps import ScriptedStep, as_steps
from tests.slack.harness import CHANNEL, CHANNEL_NAME, SlackBot, running_bot
from tests.slackwire.fake_web_api import FakeSlack


@pytest.mark.parametrize(("configured", "channel_id", "name", "matches"), [
    ("C0ONCALL1", "C0ONCALL1", "oncall-engineering", True),
    ("C0ONCALL1", "C0RECREATED", "oncall-engineering", False),  # the old name, another channel
    ("#C0ONCALL1", "C0ONCALL1", "renamed", True),
    ("oncall-engineering", "C0ANY", "oncall-engineering", True),
    ("#oncall-engineering", "C0ANY", "random", False),
])
def test_an_id_matches_only_its_channel(configured: str, channel_id: str, name: str,
                                        matches: bool) -> None:
    settings = Settings(_env_file=None, rollback_channel=configured)  # type: ignore[call-arg]
    assert is_rollback_channel(settings, channel_id, name) is matches


@pytest.fixture
async def id_bot(
    fake_slack: FakeSlack, bot_sessionmaker: async_sessionmaker[AsyncSession],
    steps: dict[StepName, ScriptedStep],
) -> AsyncIterator[SlackBot]:
    async with running_bot(fake_slack, bot_sessionmaker, as_steps(steps),
                           rollback_channel=CHANNEL) as running:
        yield running


async def test_a_channel_with_the_name_but_not_the_id_is_refused(id_bot: SlackBot) -> None:
    _, answer = await id_bot.command("Phase 3 broke auth", channel="C_RECREATED",
                                     channel_name=CHANNEL_NAME)
    assert json.loads(answer)["text"] == f"Rollbacks run only in <#{CHANNEL}>."
    assert id_bot.fake.calls_to("views.open") == []
    await id_bot.command("Phase 3 broke auth", channel=CHANNEL, channel_name=CHANNEL_NAME)
    assert id_bot.start_form() is not None, "the configured channel itself opens the form"
