"""Which key rotation a run works on, and when a rotation is over. Functions take a session and
never commit: the caller owns the transaction.

A rotation is named by the run that began it (its step 4 started). A run is bound to one when it
is created: the rotation of the latest earlier run whose step 4 started, unless that rotation is
closed; else its own. Runs are created one at a time (one active run), so the choice is made
once and never changes while the run goes on. Step 5 done closes the rotation.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import ClosedRotation, KeyRotation, Notification, RollbackRun, StepExecution
from bot.domain.ledgers import (
    OPENS_ROTATION,
    ClosedRotationRecord,
    NotificationStatus,
    RotationProgress,
)


def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


async def open_rotation_before(session: AsyncSession, run_id: str, target: str
                               ) -> uuid.UUID | None:
    """The rotation of the latest other run on `target` whose step 4 started, if it is not
    closed (a rotation belongs to its target: production never continues staging's)."""
    began = exists(select(StepExecution.id).where(
        StepExecution.run_id == RollbackRun.id, StepExecution.step == OPENS_ROTATION.value,
        StepExecution.started_at.is_not(None)))
    rotation = (await session.execute(
        select(func.coalesce(RollbackRun.rotation_id, RollbackRun.id))
        .where(RollbackRun.id != _uuid(run_id), RollbackRun.target == target, began)
        .order_by(RollbackRun.created_at.desc()).limit(1))).scalar()
    if rotation is None or await session.get(ClosedRotation, rotation) is not None:
        return None
    return rotation


async def bind_rotation(session: AsyncSession, run_id: str) -> str:
    """Decide, for a run being created, which rotation it works on; returns its id."""
    target = (await session.execute(select(RollbackRun.target)
                                    .where(RollbackRun.id == _uuid(run_id)))).scalar_one()
    rotation = await open_rotation_before(session, run_id, target)
    if rotation is None:
        return run_id
    await session.execute(update(RollbackRun).where(RollbackRun.id == _uuid(run_id))
                          .values(rotation_id=rotation))
    return str(rotation)


async def rotation_of(session: AsyncSession, run_id: str) -> str:
    """The rotation a run works on: the one it continues, else its own (its run id)."""
    try:
        rotation = (await session.execute(
            select(func.coalesce(RollbackRun.rotation_id, RollbackRun.id))
            .where(RollbackRun.id == _uuid(run_id)))).scalar()
    except ValueError:  # not a run id (a dry run's context)
        return run_id
    return str(rotation) if rotation is not None else run_id


async def is_closed(session: AsyncSession, rotation_id: str) -> bool:
    return await session.get(ClosedRotation, _uuid(rotation_id)) is not None


async def progress(session: AsyncSession, rotation_id: str) -> RotationProgress:
    """How far the rotation got, from its ledgers (counts only)."""
    rotation = _uuid(rotation_id)
    keyed = (await session.execute(select(func.count()).select_from(KeyRotation)
                                   .where(KeyRotation.run_id == rotation))).scalar() or 0
    rows = await session.execute(
        select(Notification.status, func.count()).where(Notification.run_id == rotation)
        .group_by(Notification.status))
    status: dict[str, int] = {row[0]: row[1] for row in rows}
    return RotationProgress(keyed=keyed, mailed=status.get(NotificationStatus.SENT.value, 0),
                            no_contact=status.get(NotificationStatus.NO_CONTACT.value, 0),
                            uncertain=status.get(NotificationStatus.SENDING.value, 0))


async def last_closed(session: AsyncSession, target: str | None = None
                      ) -> ClosedRotationRecord | None:
    """The latest closed rotation that keyed any client, with the counts recorded at closure
    (read from its ledgers when the record has none: closed by migration 0002_adopt)."""
    keyed = exists(select(KeyRotation.old_hash)
                   .where(KeyRotation.run_id == ClosedRotation.rotation_id))
    query = select(ClosedRotation).where(keyed)
    if target is not None:
        query = query.where(ClosedRotation.target == target)
    closed = (await session.execute(
        query
        .order_by(ClosedRotation.closed_at.desc()).limit(1))).scalar()
    if closed is None:
        return None
    facts = closed.facts
    counts = (RotationProgress(keyed=int(facts["clients_keyed"]),
                               mailed=int(facts.get("mailed", 0)),
                               no_contact=int(facts.get("no_contact", 0)),
                               uncertain=int(facts.get("uncertain", 0)))
              if "clients_keyed" in facts else await progress(session, str(closed.rotation_id)))
    return ClosedRotationRecord(rotation_id=str(closed.rotation_id),
                                closed_in_run=str(closed.closed_in_run),
                                closed_at=closed.closed_at, progress=counts)


async def close_rotation(session: AsyncSession, run_id: str) -> str | None:
    """Closes the rotation the run works on (its step 5 is done); returns its id, or None if it
    was closed already."""
    rotation = await rotation_of(session, run_id)
    done = await progress(session, rotation)
    facts: dict[str, Any] = {"clients_keyed": done.keyed, "mailed": done.mailed,
                             "no_contact": done.no_contact, "uncertain": done.uncertain}
    closed = await session.execute(
        insert(ClosedRotation).values(rotation_id=_uuid(rotation), closed_in_run=_uuid(run_id),
                                      facts=facts)
        .on_conflict_do_nothing().returning(ClosedRotation.rotation_id))
    return rotation if closed.first() is not None else None
