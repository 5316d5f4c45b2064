"""Every step's plan against the live target, with nothing written anywhere.

`rollback-bot plan` and `/rollback-phase3 plan` are one code path (`dry_run_report`): both read
the bot database for the rotation a new run would continue, or the last closed one, so the
terminal never shows a plan the Slack front would contradict. When the bot database cannot be
read the plan is still made (against the target) and says so in a `note:` line: the plans of
steps 4 and 5 may then miss a rotation that is already under way.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_rotations
from bot.db.ledgers import SqlNotificationLedger, SqlRotationLedger
from bot.db.session import make_engine, make_sessionmaker
from bot.domain.ledgers import ClosedRotationRecord
from bot.domain.memory_ledgers import MemoryNotificationLedger, MemoryRotationLedger
from bot.domain.paging_policy import paging_status
from bot.domain.step_protocol import Plan, Step, StepContext
from bot.domain.steps import STEP_ORDER, StepName
from bot.engine.plans import safe_plan
from bot.engine.reports import plans_text
from bot.settings import Settings

NO_BOT_DATABASE = ("note: DATABASE_URL is not set: the bot database was not read, so steps 4 "
                   "and 5 show neither a rotation a new run would continue nor a closed one")


@dataclass(frozen=True)
class DryRun:
    plans: list[Plan]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _RotationState:
    rotation: uuid.UUID | None = None
    closed: ClosedRotationRecord | None = None
    note: str | None = None


async def _rotation_state(sessions: async_sessionmaker[AsyncSession],
                          limit: float) -> _RotationState:
    """The rotation a new run would continue and the last closed one, within `limit`."""
    try:
        async with asyncio.timeout(limit), sessions() as session:
            rotation = await repo_rotations.open_rotation_before(session, str(uuid.uuid4()))
            closed = await repo_rotations.last_closed(session)
    except (OSError, SQLAlchemyError, TimeoutError) as exc:
        why = (f"did not answer within {limit:g} s" if isinstance(exc, TimeoutError)
               else f"could not be read ({type(exc).__name__})")
        return _RotationState(note=(
            f"note: the bot database {why}: steps 4 and 5 are planned without it and may "
            "miss a rotation a new run would continue, or one already closed"))
    return _RotationState(rotation=rotation, closed=closed)


async def dry_run(settings: Settings, steps: Mapping[StepName, Step],
                  sessions: async_sessionmaker[AsyncSession] | None = None) -> DryRun:
    """With the bot database (`sessions`), the plans of steps 4 and 5 show the rotation a new
    run would continue, read from its ledgers (plans only read them), or, when there is none
    to continue, what the last closed rotation did."""
    state = (await _rotation_state(sessions, settings.plan_timeout_seconds)
             if sessions is not None else _RotationState(note=NO_BOT_DATABASE))
    if sessions is not None and state.rotation is not None:
        ctx = StepContext(run_id="dry-run", settings=settings,
                          rotations=SqlRotationLedger(sessions),
                          notifications=SqlNotificationLedger(sessions),
                          rotation_id=str(state.rotation))
    else:
        closed = (state.closed,) if state.closed else ()
        ctx = StepContext(run_id="dry-run", settings=settings,
                          rotations=MemoryRotationLedger(closed=closed),
                          notifications=MemoryNotificationLedger())
    plans = [await safe_plan(steps[name], ctx) for name in STEP_ORDER]
    return DryRun(plans, (state.note,) if state.note else ())


def dry_run_text(settings: Settings, report: DryRun) -> str:
    """The dry run as both fronts show it: the plans, any note, then whether paging is on."""
    lines = ["Dry run — nothing changed:", plans_text(report.plans), *report.notes,
             paging_status(settings.pagerduty_routing_key is not None, settings.page_on,
                           settings.pagerduty_events_url)]
    return "\n".join(lines)


async def dry_run_from_settings(settings: Settings, steps: Mapping[StepName, Step]) -> DryRun:
    """The dry run of `rollback-bot plan`: the bot database is the one `DATABASE_URL` names."""
    if settings.database_url is None:
        return await dry_run(settings, steps)
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=2)
    try:
        return await dry_run(settings, steps, make_sessionmaker(engine))
    finally:
        await engine.dispose()
