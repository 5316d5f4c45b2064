"""What a Resend of step 5's unconfirmed emails reads and writes. Functions take a session and
never commit (the caller owns the transaction)."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Notification, RollbackRun, StepExecution
from bot.db.repo_rotations import rotation_of
from bot.domain.resend import RESENDABLE_RUN_STATUSES, UNCONFIRMED
from bot.domain.states import ExecutionKind, RunStatus, StepStatus
from bot.domain.steps import StepName


async def unconfirmed_clients(session: AsyncSession, run_id: str) -> list[str]:
    """Ledger ids whose email nobody can confirm (`sending` or `failed`), sorted. The ledger is
    the run's rotation's: an earlier run's when this one continues it."""
    rotation = await rotation_of(session, run_id)
    query = (select(Notification.client_hash)
             .where(Notification.run_id == uuid.UUID(rotation),
                    Notification.status.in_([s.value for s in UNCONFIRMED]))
             .order_by(Notification.client_hash))
    return list((await session.execute(query)).scalars())


async def runs_with_resend_waiting(session: AsyncSession, target: str | None = None
                                   ) -> set[str]:
    """Runs whose resend of step 5 waits for approval and may still be sent (an ended run's
    too: it is no longer the active one, yet its approvals still expire)."""
    query = (select(StepExecution.run_id).join(RollbackRun, RollbackRun.id == StepExecution.run_id)
             .where(StepExecution.kind == ExecutionKind.RESEND.value,
                    StepExecution.status == StepStatus.AWAITING_APPROVAL.value,
                    RollbackRun.status.in_([s.value for s in RESENDABLE_RUN_STATUSES]))
             .distinct())
    if target is not None:
        query = query.where(RollbackRun.target == target)
    return {str(run_id) for run_id in (await session.execute(query)).scalars()}


async def resend_count(session: AsyncSession, run_id: str) -> int:
    query = select(func.count()).select_from(StepExecution).where(
        StepExecution.run_id == uuid.UUID(run_id),
        StepExecution.step == StepName.EMAIL_CLIENTS.value,
        StepExecution.kind == ExecutionKind.RESEND.value)
    return int((await session.execute(query)).scalar() or 0)


async def confirm_run(session: AsyncSession, run_id: str) -> bool:
    """A run that ended with unconfirmed deliveries becomes plain completed; False if it was
    not in that state."""
    result = await session.execute(
        update(RollbackRun)
        .where(RollbackRun.id == uuid.UUID(run_id),
               RollbackRun.status == RunStatus.COMPLETED_UNCONFIRMED.value)
        .values(status=RunStatus.COMPLETED.value).returning(RollbackRun.id))
    return result.scalar() is not None
