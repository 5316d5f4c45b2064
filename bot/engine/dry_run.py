"""Every step's plan against the live target, with nothing written anywhere."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_rotations
from bot.db.ledgers import SqlNotificationLedger, SqlRotationLedger
from bot.domain.memory_ledgers import MemoryNotificationLedger, MemoryRotationLedger
from bot.domain.step_protocol import Plan, Step, StepContext
from bot.domain.steps import STEP_ORDER, StepName
from bot.engine.plans import safe_plan
from bot.settings import Settings


async def dry_run(settings: Settings, steps: Mapping[StepName, Step],
                  sessions: async_sessionmaker[AsyncSession] | None = None) -> list[Plan]:
    """With the bot database (`sessions`), the plans of steps 4 and 5 show the rotation a new
    run would continue, read from its ledgers (plans only read them), or, when there is none
    to continue, what the last closed rotation did."""
    rotation, closed = None, None
    if sessions is not None:
        async with sessions() as session:
            rotation = await repo_rotations.open_rotation_before(session, str(uuid.uuid4()))
            closed = await repo_rotations.last_closed(session)
    if sessions is not None and rotation is not None:
        ctx = StepContext(run_id="dry-run", settings=settings,
                          rotations=SqlRotationLedger(sessions),
                          notifications=SqlNotificationLedger(sessions),
                          rotation_id=str(rotation))
    else:
        ctx = StepContext(run_id="dry-run", settings=settings,
                          rotations=MemoryRotationLedger(closed=(closed,) if closed else ()),
                          notifications=MemoryNotificationLedger())
    return [await safe_plan(steps[name], ctx) for name in STEP_ORDER]
