"""The engine on a real bot database with scripted steps."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.steps import StepName
from bot.engine.engine import Engine
from bot.settings import Settings
from tests.engine.fake_steps import ScriptedStep, as_steps, scripted_steps


@pytest.fixture
def steps() -> dict[StepName, ScriptedStep]:
    return scripted_steps()


@pytest.fixture
async def engine(
    bot_sessionmaker: async_sessionmaker[AsyncSession], steps: dict[StepName, ScriptedStep]
) -> AsyncIterator[Engine]:
    settings = Settings(_env_file=None, step_timeout_seconds=30)  # type: ignore[call-arg]
    engine = Engine(bot_sessionmaker, settings, as_steps(steps), replica_id="test-replica")
    yield engine
    await engine.shutdown()
