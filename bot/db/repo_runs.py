"""Runs, step executions, approvals and leases. Functions take a session and never commit:
the caller owns the transaction (so a quorum count and a step start share one).

Every time written here is the database server's: replicas' clocks may disagree by seconds, and
a lease judged by each replica's own clock would let a fast clock steal a live lease or a slow
one keep a dead lease. Lease instants use `clock_timestamp()` (the moment the statement runs,
not when its transaction began); durations travel as seconds, never as instants.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Approval, RollbackRun, StepExecution
from bot.domain.approvals import APPROVAL_TTL_SECONDS, APPROVALS_NEEDED
from bot.domain.states import ExecutionKind, RunStatus, StepStatus
from bot.domain.steps import StepName


def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _now() -> Any:
    """The database's clock, at the moment the statement runs."""
    return func.clock_timestamp()


def _in_seconds(seconds: float) -> Any:
    """The database's clock plus a duration, computed by the database."""
    return func.clock_timestamp() + func.make_interval(0, 0, 0, 0, 0, 0, float(seconds))


@dataclass(frozen=True)
class ActiveRunExists:
    run: RollbackRun


async def create_run(
    session: AsyncSession, *, initiator_id: str, initiator_name: str, reason: str, source: str,
    channel_id: str | None, target: str = "default",
) -> RollbackRun | ActiveRunExists:
    """A new active run, or the run that is already active (the unique index decides)."""
    run = RollbackRun(
        id=uuid.uuid4(), status=RunStatus.ACTIVE.value, initiator_id=initiator_id,
        initiator_name=initiator_name, reason=reason, source=source, channel_id=channel_id,
        target=target,
    )
    try:
        async with session.begin_nested():
            session.add(run)
            await session.flush()
    except IntegrityError:
        active = await get_active_run(session, target)
        if active is None:  # it finished between our insert and this read
            raise
        return ActiveRunExists(active)
    return run


async def run_exists(session: AsyncSession, run_id: str) -> bool:
    """False too for what is not a run id at all (a forged button's)."""
    try:
        wanted = _uuid(run_id)
    except ValueError:
        return False
    query = select(RollbackRun.id).where(RollbackRun.id == wanted)
    return (await session.execute(query)).scalar() is not None


async def get_run(
    session: AsyncSession, run_id: str | uuid.UUID, for_update: bool = False
) -> RollbackRun | None:
    query = select(RollbackRun).where(RollbackRun.id == _uuid(run_id))
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query.execution_options(populate_existing=True))).scalar()


async def get_active_run(session: AsyncSession, target: str | None = None
                         ) -> RollbackRun | None:
    """The active run of `target` (one at most: the unique index); None: of any target."""
    query = select(RollbackRun).where(RollbackRun.status == RunStatus.ACTIVE.value)
    if target is not None:
        query = query.where(RollbackRun.target == target)
    return (await session.execute(query.order_by(RollbackRun.created_at).limit(1))).scalar()


async def record_run_thread(
    session: AsyncSession, run_id: str, channel_id: str, thread_ts: str
) -> str | None:
    """The run's thread is `thread_ts` unless one was recorded first (by another replica);
    the one recorded now (None: no such run)."""
    await session.execute(update(RollbackRun)
                          .where(RollbackRun.id == _uuid(run_id), RollbackRun.thread_ts.is_(None))
                          .values(channel_id=channel_id, thread_ts=thread_ts))
    query = select(RollbackRun.thread_ts).where(RollbackRun.id == _uuid(run_id))
    return (await session.execute(query)).scalar()


async def set_current_step(session: AsyncSession, run_id: str, step: StepName) -> None:
    await session.execute(update(RollbackRun).where(RollbackRun.id == _uuid(run_id))
                          .values(current_step=step.value))


async def finish_run(
    session: AsyncSession, run_id: str, status: RunStatus, reason: str | None
) -> bool:
    """End an active run; False when it had already ended (a concurrent transition's update
    is waited for and the condition read again, so of two at once exactly one is True)."""
    result = await session.execute(
        update(RollbackRun).where(RollbackRun.id == _uuid(run_id),
                                  RollbackRun.status == RunStatus.ACTIVE.value)
        .values(status=status.value, abort_reason=reason, finished_at=_now())
        .returning(RollbackRun.id)
    )
    return result.scalar() is not None


# --- step executions --------------------------------------------------------------------------

async def attempt_is_open(
    session: AsyncSession, run_id: str, step: StepName, attempt: int,
) -> bool:
    """Lock the run's row and say whether `attempt` of `step` is still to be created: the run
    is active and the step has no such attempt yet. Every transition that puts a step up
    (a step's end, recovery of a stalled run, a Retry, on any replica) queues on this lock, so
    the second one reads what the first committed. False: someone else got there first.
    `FOR NO KEY UPDATE`: events and leases of the run go on meanwhile (they only reference it)."""
    status = (await session.execute(
        select(RollbackRun.status).where(RollbackRun.id == _uuid(run_id))
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE
    )).scalar()
    if status != RunStatus.ACTIVE.value:
        return False
    latest = await latest_execution(session, run_id, step)
    return latest is None or latest.attempt < attempt


async def create_step_execution(
    session: AsyncSession, run_id: str, step: StepName, attempt: int, plan: dict[str, Any],
    fingerprint: str, kind: ExecutionKind = ExecutionKind.STEP,
) -> StepExecution:
    execution = StepExecution(
        id=uuid.uuid4(), run_id=_uuid(run_id), step=step.value, attempt=attempt,
        status=StepStatus.AWAITING_APPROVAL.value, plan=plan, plan_fingerprint=fingerprint,
        kind=kind.value,
    )
    session.add(execution)
    await session.flush()
    return execution


async def get_execution(
    session: AsyncSession, execution_id: str | uuid.UUID, for_update: bool = False
) -> StepExecution | None:
    try:
        key = _uuid(execution_id)
    except ValueError:
        return None
    query = select(StepExecution).where(StepExecution.id == key)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query.execution_options(populate_existing=True))).scalar()


async def latest_execution(
    session: AsyncSession, run_id: str | uuid.UUID, step: StepName | str,
    kind: ExecutionKind = ExecutionKind.STEP,
) -> StepExecution | None:
    """The step's latest attempt (`kind` resend: the latest resend of step 5)."""
    query = (
        select(StepExecution)
        .where(StepExecution.run_id == _uuid(run_id), StepExecution.step == str(step),
               StepExecution.kind == kind.value)
        .order_by(StepExecution.attempt.desc()).limit(1)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(query)).scalar()


async def replace_plan(
    session: AsyncSession, execution_id: uuid.UUID, plan: dict[str, Any], fingerprint: str
) -> int:
    """A new plan voids the approvals given to the old one; returns how many were voided."""
    voided = await session.execute(
        delete(Approval).where(Approval.step_execution_id == execution_id)
    )
    await session.execute(update(StepExecution).where(StepExecution.id == execution_id)
                          .values(plan=plan, plan_fingerprint=fingerprint))
    return int(voided.rowcount or 0)  # type: ignore[attr-defined]


async def set_execution_status(
    session: AsyncSession, execution_id: str | uuid.UUID, status: StepStatus
) -> None:
    values: dict[str, Any] = {"status": status.value}
    if status in (StepStatus.REJECTED, StepStatus.ABORTED):
        values["finished_at"] = _now()
    await session.execute(update(StepExecution)
                          .where(StepExecution.id == _uuid(execution_id)).values(**values))


async def finish_execution(
    session: AsyncSession, execution_id: str, status: StepStatus, facts: dict[str, Any],
    error: str | None, summary: str, owner: str,
) -> bool:
    """End a running step — only if `owner` still holds its lease and it is still running
    (a replica that lost its lease must not overwrite what another one found); releases the
    lease. False: nothing was written."""
    result = await session.execute(
        update(StepExecution)
        .where(StepExecution.id == _uuid(execution_id), _held_by(owner))
        .values(status=status.value, facts=facts, error=error, summary=summary,
                finished_at=_now(), lease_owner=None, lease_expires_at=None)
        .returning(StepExecution.id)
    )
    return result.scalar() is not None


async def record_execution_message(session: AsyncSession, execution_id: str, ts: str
                                   ) -> str | None:
    """The step's message is `ts` unless one was recorded first (by another replica); the one
    recorded now (None: no such execution)."""
    await session.execute(update(StepExecution)
                          .where(StepExecution.id == _uuid(execution_id),
                                 StepExecution.message_ts.is_(None))
                          .values(message_ts=ts))
    query = select(StepExecution.message_ts).where(StepExecution.id == _uuid(execution_id))
    return (await session.execute(query)).scalar()


async def executions_for_run(session: AsyncSession, run_id: str) -> list[StepExecution]:
    query = (select(StepExecution).where(StepExecution.run_id == _uuid(run_id))
             .order_by(StepExecution.created_at, StepExecution.attempt))
    return list((await session.execute(query)).scalars())


# --- approvals --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ApproverRow:
    user_id: str
    user_name: str
    approval_id: int = 0
    approved_at: datetime | None = None
    expired: bool = False  # older than the TTL by the database's clock: no longer counted
    source: str = "slack"  # where it was given: `terminal` is break-glass (TOTP-proven)


@dataclass(frozen=True)
class ApprovalResult:
    inserted: bool
    approvers: list[ApproverRow]  # fresh and expired, oldest first
    started: bool

    @property
    def fresh(self) -> list[ApproverRow]:
        return [a for a in self.approvers if not a.expired]

    @property
    def expired(self) -> list[ApproverRow]:
        return [a for a in self.approvers if a.expired]


def _older_than(ttl_seconds: float | None):  # type: ignore[no-untyped-def]
    """`approvals.created_at` is past the TTL, by the database's clock (`now()` is the
    transaction's start, so one transaction sees one answer)."""
    if ttl_seconds is None:
        return literal(False)
    return Approval.created_at <= func.now() - literal(timedelta(seconds=float(ttl_seconds)))


async def approvers(
    session: AsyncSession, execution_id: str | uuid.UUID, ttl_seconds: float | None = None
) -> list[ApproverRow]:
    """Everyone who approved, oldest first; with a TTL, those past it are marked expired."""
    query = (select(Approval.user_id, Approval.user_name, Approval.id, Approval.created_at,
                    _older_than(ttl_seconds).label("expired"), Approval.source)
             .where(Approval.step_execution_id == _uuid(execution_id)).order_by(Approval.id))
    return [ApproverRow(r.user_id, r.user_name, r.id, r.created_at, bool(r.expired), r.source)
            for r in await session.execute(query)]


async def add_approval(
    session: AsyncSession, execution_id: str | uuid.UUID, user_id: str, user_name: str,
    fingerprint: str, source: str, needed: int = APPROVALS_NEEDED,
    ttl_seconds: float | None = APPROVAL_TTL_SECONDS,
) -> ApprovalResult:
    """Record one approval and, on reaching the quorum, start the step — in the caller's
    transaction, under a row lock, so concurrent clicks give exactly `needed` approvals and one
    start. Only approvals younger than `ttl_seconds` (database time) count: an expired one is
    renewed when its engineer approves again, so a late second click never starts a step
    alone. A refusal for state or fingerprint is the caller's job (the policy explains it)."""
    key = _uuid(execution_id)
    execution = await get_execution(session, key, for_update=True)
    if (execution is None or execution.status != StepStatus.AWAITING_APPROVAL.value
            or execution.plan_fingerprint != fingerprint):
        return ApprovalResult(False, await approvers(session, key, ttl_seconds), False)
    statement = insert(Approval).values(step_execution_id=key, user_id=user_id,
                                        user_name=user_name, plan_fingerprint=fingerprint,
                                        source=source)
    inserted = await session.execute(statement.on_conflict_do_update(
        constraint="uq_approvals_user",
        set_={"created_at": func.now(), "user_name": statement.excluded.user_name,
              "plan_fingerprint": statement.excluded.plan_fingerprint,
              "source": statement.excluded.source},
        where=_older_than(ttl_seconds),
    ).returning(Approval.id))
    was_inserted = inserted.scalar() is not None
    rows = await approvers(session, key, ttl_seconds)
    count = sum(1 for row in rows if not row.expired)
    started = was_inserted and count >= needed
    if started:
        await session.execute(update(StepExecution).where(StepExecution.id == key)
                              .values(status=StepStatus.RUNNING.value, started_at=_now()))
    return ApprovalResult(was_inserted, rows, started)


# --- leases -----------------------------------------------------------------------------------

def _held_by(owner: str) -> Any:
    return and_(StepExecution.lease_owner == owner,
                StepExecution.status == StepStatus.RUNNING.value)


async def claim_lease(
    session: AsyncSession, execution_id: str | uuid.UUID, owner: str, ttl_seconds: float
) -> bool:
    """Take (or keep) the right to execute a running step: free, expired, or already ours."""
    result = await session.execute(
        update(StepExecution)
        .where(
            StepExecution.id == _uuid(execution_id),
            StepExecution.status == StepStatus.RUNNING.value,
            or_(StepExecution.lease_owner.is_(None), StepExecution.lease_owner == owner,
                StepExecution.lease_expires_at < _now()),
        )
        .values(lease_owner=owner, lease_expires_at=_in_seconds(ttl_seconds))
        .returning(StepExecution.id)
    )
    return result.scalar() is not None


async def renew_lease(
    session: AsyncSession, execution_id: str, owner: str, ttl_seconds: float
) -> bool:
    """Extend our lease of a running step; False when it is no longer ours (or no longer
    running): the caller must stop the step."""
    result = await session.execute(
        update(StepExecution)
        .where(StepExecution.id == _uuid(execution_id), _held_by(owner))
        .values(lease_expires_at=_in_seconds(ttl_seconds))
        .returning(StepExecution.id)
    )
    return result.scalar() is not None


async def release_lease(session: AsyncSession, execution_id: str, owner: str) -> None:
    await session.execute(
        update(StepExecution)
        .where(StepExecution.id == _uuid(execution_id), StepExecution.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )


async def expire_lease(session: AsyncSession, execution_id: str) -> None:
    """Make a lease look abandoned (what a dead replica leaves behind)."""
    await session.execute(
        update(StepExecution).where(StepExecution.id == _uuid(execution_id))
        .values(lease_expires_at=_in_seconds(-1))
    )


async def find_orphaned_running(session: AsyncSession, target: str | None = None
                                ) -> list[StepExecution]:
    """Running steps nobody holds: no lease, or a lease that was not renewed in time (of
    `target` only: another target's steps are its engine's to examine; None: any)."""
    query = select(StepExecution).where(
        StepExecution.status == StepStatus.RUNNING.value,
        or_(StepExecution.lease_owner.is_(None),
            and_(StepExecution.lease_expires_at.is_not(None),
                 StepExecution.lease_expires_at < _now())),
    )
    if target is not None:
        query = query.where(StepExecution.target == target)
    return list((await session.execute(query)).scalars())
