"""Which incident-log entries have been carried to PagerDuty or to the thread. Never commits.

A delivery is recorded here once the outside world took it; while it is in flight it is held by
a claim in `delivery_claims` (bot/db/repo_delivery_claims.py), never by an open transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import EventDelivery, IncidentEvent
from bot.domain.events import EventKind


class Target(StrEnum):
    PAGERDUTY = "pagerduty"
    SLACK = "slack"



def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


async def pending(
    session: AsyncSession, run_id: str, target: Target, kinds: Iterable[EventKind]
) -> list[IncidentEvent]:
    """Entries of `kinds` not yet delivered to `target`, in log order."""
    delivered = exists().where(EventDelivery.event_id == IncidentEvent.id,
                               EventDelivery.target == target.value)
    query = (select(IncidentEvent)
             .where(IncidentEvent.run_id == _uuid(run_id),
                    IncidentEvent.kind.in_([k.value for k in kinds]), ~delivered)
             .order_by(IncidentEvent.id))
    return list((await session.execute(query)).scalars())


async def record(
    session: AsyncSession, event_id: int, run_id: str, target: Target,
    detail: dict[str, Any] | None = None,
) -> None:
    await session.execute(insert(EventDelivery).values(
        event_id=event_id, target=target.value, run_id=_uuid(run_id), detail=detail or {},
    ).on_conflict_do_nothing())


async def detail_of(session: AsyncSession, event_id: int, target: Target) -> dict[str, Any] | None:
    row = (await session.execute(select(EventDelivery.detail).where(
        EventDelivery.event_id == event_id, EventDelivery.target == target.value))).first()
    return None if row is None else dict(row[0] or {})


async def events_of(
    session: AsyncSession, run_id: str, kinds: Iterable[EventKind]
) -> list[IncidentEvent]:
    """The run's entries of some kinds, in log order (a filtered read; never the output)."""
    query = (select(IncidentEvent)
             .where(IncidentEvent.run_id == _uuid(run_id),
                    IncidentEvent.kind.in_([k.value for k in kinds]))
             .order_by(IncidentEvent.id))
    return list((await session.execute(query)).scalars())


async def database_now(session: AsyncSession) -> datetime:
    """The database's clock: every time-based rule (reminders, expiry) reads this one."""
    now: datetime = (await session.execute(select(func.now()))).scalar_one()
    return now
