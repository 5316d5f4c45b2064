"""The last rehearsal on a target, as production's plan quotes it. Functions take a session and
never commit."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import IncidentEvent, RollbackRun, StepExecution
from bot.domain.events import EventKind
from bot.domain.rehearsal import Rehearsal, RehearsedStep
from bot.domain.states import ExecutionKind, RunStatus
from bot.domain.steps import STEP_ORDER, StepName


def _seconds(execution: StepExecution) -> float | None:
    if execution.started_at is None or execution.finished_at is None:
        return None
    return (execution.finished_at - execution.started_at).total_seconds()


async def last_rehearsal(session: AsyncSession, target: str) -> Rehearsal | None:
    """The latest run on `target` that has ended, with each step's last attempt."""
    run = (await session.execute(
        select(RollbackRun)
        .where(RollbackRun.target == target, RollbackRun.status != RunStatus.ACTIVE.value,
               RollbackRun.finished_at.is_not(None))
        .order_by(RollbackRun.finished_at.desc()).limit(1))).scalar()
    if run is None or run.finished_at is None:
        return None
    executions = (await session.execute(
        select(StepExecution)
        .where(StepExecution.run_id == run.id, StepExecution.kind == ExecutionKind.STEP.value)
        .order_by(StepExecution.attempt))).scalars()
    last: dict[StepName, StepExecution] = {StepName(e.step): e for e in executions}
    steps = tuple(RehearsedStep(name, last[name].status, _seconds(last[name]))
                  for name in STEP_ORDER if name in last)
    started = (await session.execute(
        select(IncidentEvent.data).where(IncidentEvent.run_id == run.id,
                                         IncidentEvent.kind == EventKind.RUN_STARTED.value)
        .limit(1))).scalar()
    downgrade = last.get(StepName.DOWNGRADE)
    migration = ((downgrade.plan or {}).get("facts", {}).get("revision")
                 if downgrade is not None else None)
    return Rehearsal(target=target, run_id=str(run.id), initiator_name=run.initiator_name,
                     status=run.status, started_at=run.created_at, finished_at=run.finished_at,
                     steps=steps, code_revision=(started or {}).get("code_revision"),
                     migration_revision=str(migration) if migration is not None else None)
