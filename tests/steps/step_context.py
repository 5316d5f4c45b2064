"""A StepContext for step tests: real settings, ledgers in memory (the bot DB is tested apart)."""

from __future__ import annotations

import uuid
from typing import Any

from bot.domain.memory_ledgers import MemoryNotificationLedger, MemoryRotationLedger
from bot.domain.step_protocol import StepContext
from bot.settings import Settings


def step_context(settings: Settings, run_id: str | None = None, **earlier: Any) -> StepContext:
    return StepContext(
        run_id=run_id or str(uuid.uuid4()), settings=settings,
        rotations=MemoryRotationLedger(), notifications=MemoryNotificationLedger(),
        earlier_facts=earlier,
    )


def settings_for(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]
