"""Claims on deliveries in flight (`delivery_claims`). Functions take a session, never commit.

Times are the database's (`clock_timestamp()`), so replicas with skewed clocks agree on when a
claim lapses. A claim is taken when nobody holds it (or its holder's lease ran out) and the
entry is not recorded as delivered; each take counts, so a later taker knows an earlier claim
lapsed unrecorded and must look at what went out before sending again.
"""

from __future__ import annotations

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import DeliveryClaim, EventDelivery


def _until(lease_seconds: float) -> object:
    return func.clock_timestamp() + func.make_interval(0, 0, 0, 0, 0, 0, float(lease_seconds))


def _key(event_id: int, target: str) -> object:
    return (DeliveryClaim.event_id == event_id) & (DeliveryClaim.target == target)


async def take(session: AsyncSession, event_id: int, target: str, owner: str,
               lease_seconds: float) -> int | None:
    """This take's number (1: the first), or None: delivered already, or held by a live claim."""
    delivered = (await session.execute(select(exists().where(
        EventDelivery.event_id == event_id, EventDelivery.target == target)))).scalar_one()
    if delivered:
        return None
    claim = insert(DeliveryClaim).values(
        event_id=event_id, target=target, owner=owner, expires_at=_until(lease_seconds),
        takes=1)
    statement = claim.on_conflict_do_update(
        index_elements=[DeliveryClaim.event_id, DeliveryClaim.target],
        set_={"owner": owner, "expires_at": _until(lease_seconds),
              "claimed_at": func.clock_timestamp(), "takes": DeliveryClaim.takes + 1},
        where=DeliveryClaim.expires_at < func.clock_timestamp(),
    ).returning(DeliveryClaim.takes)
    takes = (await session.execute(statement)).scalar()
    return None if takes is None else int(takes)


async def renew(session: AsyncSession, event_id: int, target: str, owner: str,
                lease_seconds: float) -> bool:
    """Extend our live claim; False if it lapsed and another took it (or it is gone)."""
    result = await session.execute(
        update(DeliveryClaim)
        .where(_key(event_id, target), DeliveryClaim.owner == owner)  # type: ignore[arg-type]
        .values(expires_at=_until(lease_seconds))
        .returning(DeliveryClaim.takes))
    return result.scalar() is not None


async def still_mine(session: AsyncSession, event_id: int, target: str, owner: str) -> bool:
    """Lock our claim row (a taker waits for this transaction); False if it is not ours."""
    row = (await session.execute(
        select(DeliveryClaim.owner).where(_key(event_id, target))  # type: ignore[arg-type]
        .with_for_update())).scalar()
    return row == owner


async def lapse(session: AsyncSession, event_id: int, target: str, owner: str) -> None:
    """Our call failed (it may have been applied): end the claim now, so the next take
    examines what went out."""
    await session.execute(
        update(DeliveryClaim)
        .where(_key(event_id, target), DeliveryClaim.owner == owner)  # type: ignore[arg-type]
        .values(expires_at=func.clock_timestamp()))


async def finish(session: AsyncSession, event_id: int, target: str) -> None:
    """The delivery is recorded: the claim has no more use."""
    await session.execute(delete(DeliveryClaim).where(_key(event_id, target)))  # type: ignore[arg-type]
