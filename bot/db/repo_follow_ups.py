"""Post-rollback actions of finished runs: who owns each, who closed it and when. Never commits."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import FollowUp, RollbackRun
from bot.domain.follow_ups import FOLLOW_UP_ORDER, FollowUpItem, FollowUpView


def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _view(item: FollowUpItem, row: FollowUp | None) -> FollowUpView:
    if row is None:
        return FollowUpView(item)
    return FollowUpView(item, row.owner_id, row.owner_name, row.owned_at, row.done_by_id,
                        row.done_by_name, row.done_at)


async def follow_ups(session: AsyncSession, run_id: str | uuid.UUID) -> tuple[FollowUpView, ...]:
    """All five, in the runbook's order; an item nobody touched yet is open and unowned."""
    rows = {row.item: row for row in (await session.execute(
        select(FollowUp).where(FollowUp.run_id == _uuid(run_id))
        .execution_options(populate_existing=True))).scalars()}
    return tuple(_view(item, rows.get(item.value)) for item in FOLLOW_UP_ORDER)


async def lock_follow_up(
    session: AsyncSession, run_id: str | uuid.UUID, item: FollowUpItem
) -> FollowUpView:
    """The item under a row lock (written first if it has no row), so two clicks serialise."""
    await session.execute(insert(FollowUp).values(run_id=_uuid(run_id), item=item.value)
                          .on_conflict_do_nothing())
    row = (await session.execute(
        select(FollowUp).where(FollowUp.run_id == _uuid(run_id), FollowUp.item == item.value)
        .with_for_update().execution_options(populate_existing=True))).scalar_one()
    return _view(item, row)


async def set_owner(
    session: AsyncSession, run_id: str | uuid.UUID, item: FollowUpItem, user_id: str,
    user_name: str,
) -> None:
    row = (await session.execute(select(FollowUp).where(
        FollowUp.run_id == _uuid(run_id), FollowUp.item == item.value))).scalar_one()
    row.owner_id, row.owner_name, row.owned_at = user_id, user_name, func.now()
    await session.flush()


async def set_done(
    session: AsyncSession, run_id: str | uuid.UUID, item: FollowUpItem, user_id: str,
    user_name: str,
) -> None:
    row = (await session.execute(select(FollowUp).where(
        FollowUp.run_id == _uuid(run_id), FollowUp.item == item.value))).scalar_one()
    row.done_by_id, row.done_by_name, row.done_at = user_id, user_name, func.now()
    await session.flush()


async def latest_run(session: AsyncSession, target: str | None = None) -> RollbackRun | None:
    """The most recent run of `target` (None: of any), active or not (what `status` reports
    on)."""
    query = select(RollbackRun).order_by(RollbackRun.created_at.desc()).limit(1)
    if target is not None:
        query = query.where(RollbackRun.target == target)
    return (await session.execute(query)).scalar()
