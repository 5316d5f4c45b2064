"""Who writes a run's Slack thread (one replica at a time), and what Slack refused for good.

A claim is a lease timed by the DATABASE's clock (`now()`), never a replica's: two replicas
whose clocks disagree still agree on who holds it. Functions take a session and never commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import MirrorClaim, RollbackRun, SlackRefusal, StepExecution
from bot.domain.events import Source
from bot.domain.states import RunStatus


def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


async def claim(session: AsyncSession, run_id: str, owner: str, ttl_seconds: float) -> bool:
    """Take or keep the right to write `run_id`'s thread: free, lapsed, or already ours. One
    statement: of two replicas asking at once, the row lock lets exactly one win."""
    statement = insert(MirrorClaim).values(
        run_id=_uuid(run_id), owner=owner,
        expires_at=func.now() + timedelta(seconds=ttl_seconds))
    upsert = statement.on_conflict_do_update(
        index_elements=[MirrorClaim.run_id],
        set_={"owner": statement.excluded.owner, "expires_at": statement.excluded.expires_at,
              "claimed_at": func.now()},
        where=or_(MirrorClaim.owner == owner, MirrorClaim.expires_at < func.now()),
    ).returning(MirrorClaim.run_id)
    return (await session.execute(upsert)).scalar() is not None


async def renew(
    session: AsyncSession, owner: str, run_ids: Iterable[str], ttl_seconds: float
) -> set[str]:
    """Extend our claims; returns those still ours (a claim another replica took is lost)."""
    keys = [_uuid(r) for r in run_ids]
    if not keys:
        return set()
    result = await session.execute(
        update(MirrorClaim)
        .where(MirrorClaim.run_id.in_(keys), MirrorClaim.owner == owner)
        .values(expires_at=func.now() + timedelta(seconds=ttl_seconds))
        .returning(MirrorClaim.run_id))
    return {str(r) for r in result.scalars()}


async def release(session: AsyncSession, owner: str, run_ids: Iterable[str]) -> None:
    """Give our claims up at once (a clean shutdown): another replica takes over without
    waiting for the lease to lapse."""
    keys = [_uuid(r) for r in run_ids]
    if keys:
        await session.execute(
            update(MirrorClaim).where(MirrorClaim.run_id.in_(keys), MirrorClaim.owner == owner)
            .values(expires_at=func.now() - timedelta(seconds=1)))


async def mark_done(session: AsyncSession, run_id: str, owner: str) -> None:
    """The thread shows the whole log of a finished run: nobody needs to watch it again."""
    await session.execute(
        update(MirrorClaim).where(MirrorClaim.run_id == _uuid(run_id),
                                  MirrorClaim.owner == owner)
        .values(done_at=func.now()))


async def runs_to_mirror(session: AsyncSession, owner: str) -> list[str]:
    """Runs whose thread may be behind and that we hold or could take: Slack runs still
    active or ended with unconfirmed deliveries (a Resend may come), and runs whose thread was
    claimed but never finished (the writer died)."""
    query = (
        select(RollbackRun.id)
        .outerjoin(MirrorClaim, MirrorClaim.run_id == RollbackRun.id)
        .where(
            or_(and_(RollbackRun.status.in_([RunStatus.ACTIVE.value,
                                             RunStatus.COMPLETED_UNCONFIRMED.value]),
                     RollbackRun.source == Source.SLACK.value),
                and_(MirrorClaim.run_id.is_not(None), MirrorClaim.done_at.is_(None))),
            or_(MirrorClaim.run_id.is_(None), MirrorClaim.owner == owner,
                MirrorClaim.expires_at < func.now()),
        )
        .order_by(RollbackRun.created_at))
    return [str(r) for r in (await session.execute(query)).scalars()]


async def holder(session: AsyncSession, run_id: str) -> str | None:
    """The replica whose claim on the thread has not lapsed (None: nobody's)."""
    query = select(MirrorClaim.owner).where(MirrorClaim.run_id == _uuid(run_id),
                                            MirrorClaim.expires_at >= func.now())
    return (await session.execute(query)).scalar()


async def record_refusal(
    session: AsyncSession, run_id: str, method: str, error: str, what: str, handled: str
) -> None:
    session.add(SlackRefusal(run_id=_uuid(run_id), method=method, error=error, what=what,
                             handled=handled))
    await session.flush()


async def refusals(session: AsyncSession, run_id: str) -> list[SlackRefusal]:
    query = (select(SlackRefusal).where(SlackRefusal.run_id == _uuid(run_id))
             .order_by(SlackRefusal.id))
    return list((await session.execute(query)).scalars())


REHOMED = "re-homed"
UNWRITABLE = "unwritable"
WRITABLE_AGAIN = "writable again"


async def thread_state(session: AsyncSession, run_id: str) -> tuple[str | None, str | None]:
    """From the refusals so far: the link to the thread the run moved away from (None: it
    never moved), and why its thread cannot be written now (None: it can)."""
    moved_from: str | None = None
    unwritable: str | None = None
    for row in await refusals(session, run_id):
        if row.handled.startswith(REHOMED):
            moved_from, unwritable = row.what, None
        elif row.handled.startswith(UNWRITABLE):
            unwritable = row.error
        elif row.handled.startswith(WRITABLE_AGAIN):
            unwritable = None
    return moved_from, unwritable


async def rehome(session: AsyncSession, run_id: str, channel_id: str) -> None:
    """The thread is lost: its next root goes to `channel_id`, and every step message is
    posted again under it."""
    await session.execute(update(RollbackRun).where(RollbackRun.id == _uuid(run_id))
                          .values(channel_id=channel_id, thread_ts=None))
    await session.execute(update(StepExecution).where(StepExecution.run_id == _uuid(run_id))
                          .values(message_ts=None))


async def forget_message(session: AsyncSession, execution_id: str, ts: str) -> None:
    """A step message was deleted: it is posted again (only if it is still that message)."""
    await session.execute(update(StepExecution).where(StepExecution.id == _uuid(execution_id),
                                                      StepExecution.message_ts == ts)
                          .values(message_ts=None))
