"""The engine's inbox of clicks. Functions take a session and never commit.

A row is written before Slack is answered; processing claims it for a while (in database time),
does the work, and marks it processed with its outcome. A claim that lapsed (its replica died
mid-way) may be taken again: the engine's transitions are idempotent for a repeated click (a
second approval by the same person counts once; a second Retry or Abort is refused as stale).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, and_, cast, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import EngineInbox, RollbackRun


async def add(session: AsyncSession, **values: Any) -> int:
    row = EngineInbox(**values)
    session.add(row)
    await session.flush()
    return int(row.id)


def _claimable(older_than_seconds: float) -> Any:
    now = func.clock_timestamp()
    return and_(
        EngineInbox.processed_at.is_(None),
        or_(EngineInbox.claimed_until.is_(None), EngineInbox.claimed_until < now),
        EngineInbox.received_at
        <= now - func.make_interval(0, 0, 0, 0, 0, 0, float(older_than_seconds)),
    )


async def claim(
    session: AsyncSession, inbox_id: int, owner: str, ttl_seconds: float,
    older_than_seconds: float = 0.0,
) -> EngineInbox | None:
    """The row, now claimed by `owner`; None if processed or claimed by someone else."""
    result = await session.execute(
        update(EngineInbox)
        .where(EngineInbox.id == inbox_id, _claimable(older_than_seconds))
        .values(claimed_by=owner, claimed_until=func.clock_timestamp()
                + func.make_interval(0, 0, 0, 0, 0, 0, float(ttl_seconds)))
        .returning(EngineInbox)
        .execution_options(populate_existing=True)
    )
    return result.scalar()


async def pending_ids(session: AsyncSession, older_than_seconds: float,
                      target: str | None = None) -> list[int]:
    """Clicks left unprocessed; of the runs of `target` only (None: any run)."""
    query = (select(EngineInbox.id).where(_claimable(older_than_seconds))
             .order_by(EngineInbox.id).limit(100))
    if target is not None:
        query = query.where(EngineInbox.run_id.in_(
            select(cast(RollbackRun.id, String)).where(RollbackRun.target == target)))
    return [int(i) for i in (await session.execute(query)).scalars()]


async def processed(session: AsyncSession, inbox_id: int, outcome: dict[str, Any]) -> None:
    await session.execute(update(EngineInbox).where(EngineInbox.id == inbox_id)
                          .values(processed_at=func.clock_timestamp(), outcome=outcome))
