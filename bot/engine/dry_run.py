"""Every step's plan against the live target, with nothing written anywhere."""

from __future__ import annotations

from collections.abc import Mapping

from bot.domain.memory_ledgers import MemoryNotificationLedger, MemoryRotationLedger
from bot.domain.step_protocol import Plan, Step, StepContext
from bot.domain.steps import STEP_ORDER, StepName
from bot.engine.plans import safe_plan
from bot.settings import Settings


async def dry_run(settings: Settings, steps: Mapping[StepName, Step]) -> list[Plan]:
    ctx = StepContext(
        run_id="dry-run", settings=settings, rotations=MemoryRotationLedger(),
        notifications=MemoryNotificationLedger(),
    )
    return [await safe_plan(steps[name], ctx) for name in STEP_ORDER]
