"""Watching a step that waits for approval: remind the approvers, record that it is overdue (a
page), record approvals that expired, and notice a quorum nobody can reach any more; and a
resend of step 5 waiting for approval alike (reminders, the overdue page on its own alert, expiry).

Each decision is the pure policy's (bot/domain/paging_policy.py) on facts read in one
transaction under the step execution's row lock, with the database's clock: two replicas
watching the same run decide once. What is decided is written to the incident log; the thread
and PagerDuty learn it from there.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import repo_deliveries, repo_events, repo_runs
from bot.db.models import RollbackRun, StepExecution
from bot.db.repo_runs import ApproverRow
from bot.domain.approvals import APPROVALS_NEEDED, eligible_approvers
from bot.domain.events import EventKind, Source
from bot.domain.paging_policy import WaitingFacts, approval_nudges, quorum_check
from bot.domain.resend import RESENDABLE_RUN_STATUSES
from bot.domain.states import ExecutionKind, RunStatus, StepStatus
from bot.domain.steps import StepName
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.engine.engine import Engine

log = logging.getLogger(__name__)

# Who may approve now (the front knows: a Slack user group's members, say); None: unknown.
ApproverSource = Callable[[], Awaitable[frozenset[str]]]

_NUDGE_KINDS = (EventKind.APPROVAL_REMINDED, EventKind.APPROVAL_OVERDUE,
                EventKind.QUORUM_UNREACHABLE, EventKind.APPROVAL_EXPIRED)


def _minutes(value: float) -> timedelta | None:
    return timedelta(minutes=value) if value > 0 else None


async def note_expired_approvals(
    session: AsyncSession, run_id: str, step: StepName | str, execution_id: str,
    rows: list[ApproverRow], resend: bool = False,
) -> bool:
    """Record each approval that expired and is not recorded yet; True if any was. Called in
    the transaction that counts the quorum (a click) and by the watcher's tick alike; `resend`:
    the approvals are of a resend of step 5, not of the step."""
    expired = [row for row in rows if row.expired and row.approved_at is not None]
    if not expired:
        return False
    seen = {(e.data.get("approval_id"), e.data.get("approved_at"))
            for e in await repo_deliveries.events_of(session, run_id,
                                                     (EventKind.APPROVAL_EXPIRED,))}
    wrote = False
    for row in expired:
        assert row.approved_at is not None
        key = (row.approval_id, row.approved_at.isoformat())
        if key in seen:
            continue
        await repo_events.append_event(
            session, run_id, "bot", Source.BOT, EventKind.APPROVAL_EXPIRED, step,
            {"execution_id": execution_id, "approval_id": row.approval_id,
             "approved_at": key[1], "user_id": row.user_id, "user_name": row.user_name,
             **({"resend": True} if resend else {})},
        )
        wrote = True
    return wrote


async def _eligible_now(approvers: ApproverSource | None) -> frozenset[str] | None:
    if approvers is None:
        return None
    try:
        return await approvers()
    except Exception as exc:  # the directory is down: no quorum verdict this time
        log.warning("could not read who may approve (%s)", exc)
        return None


async def _nudge(
    session: AsyncSession, settings: Settings, run: RollbackRun, execution: StepExecution,
    rows: list[ApproverRow], eligible: frozenset[str], extra: dict[str, Any],
) -> tuple[bool, list[Any], dict[str, Any]]:
    """Remind and record the overdue page for an execution waiting for approval, a step's or
    a resend's alike (`extra` says which, e.g. `resend: true`). Returns whether the log grew,
    the execution's earlier nudges and the facts they carry."""
    run_id, execution_id, step = str(run.id), str(execution.id), StepName(execution.step)
    now = await repo_deliveries.database_now(session)
    fresh = frozenset(r.user_id for r in rows if not r.expired)
    earlier = [e for e in await repo_deliveries.events_of(session, run_id, _NUDGE_KINDS)
               if e.data.get("execution_id") == execution_id]
    reminders = [e.at for e in earlier if e.kind == EventKind.APPROVAL_REMINDED.value]
    nudges = approval_nudges(
        WaitingFacts(now, execution.created_at, max(reminders, default=None),
                     any(e.kind == EventKind.APPROVAL_OVERDUE.value for e in earlier)),
        _minutes(settings.approval_reminder_minutes), _minutes(settings.approval_page_minutes),
    )
    facts: dict[str, Any] = {
        "execution_id": execution_id,
        "waited_minutes": int((now - execution.created_at).total_seconds() // 60),
        "approvals": len(fresh), "needed": APPROVALS_NEEDED,
        "approved": [r.user_name for r in rows if not r.expired], **extra,
    }
    if nudges.remind:
        await repo_events.append_event(
            session, run_id, "bot", Source.BOT, EventKind.APPROVAL_REMINDED, step,
            {**facts, "mention_user_ids": sorted(eligible - fresh),
             "mention_usergroup_id": settings.approver_usergroup_id},
        )
    if nudges.overdue:
        await repo_events.append_event(
            session, run_id, "bot", Source.BOT, EventKind.APPROVAL_OVERDUE, step, facts)
    return bool(nudges), earlier, facts


async def watch_waiting_step(
    engine: Engine, run_id: str, approvers: ApproverSource | None = None
) -> bool:
    """One look at the run's step awaiting approval; True if the log grew."""
    settings = engine.settings
    eligible_now = await _eligible_now(approvers)
    async with engine.sessions() as session, session.begin():
        run = await repo_runs.get_run(session, run_id)
        if run is None or RunStatus(run.status) is not RunStatus.ACTIVE or not run.current_step:
            return False
        latest = await repo_runs.latest_execution(session, run_id, run.current_step)
        if latest is None or StepStatus(latest.status) is not StepStatus.AWAITING_APPROVAL:
            return False
        execution = await repo_runs.get_execution(session, latest.id, for_update=True)
        if execution is None or StepStatus(execution.status) is not StepStatus.AWAITING_APPROVAL:
            return False
        execution_id, step = str(execution.id), StepName(execution.step)
        rows = await repo_runs.approvers(session, execution_id,
                                         settings.approval_ttl_minutes * 60)
        wrote = await note_expired_approvals(session, run_id, step, execution_id, rows)
        fresh = frozenset(r.user_id for r in rows if not r.expired)
        eligible = eligible_approvers(
            eligible_now if eligible_now is not None else frozenset(settings.approver_user_ids),
            run.initiator_id, settings.allow_self_approval)
        nudged, earlier, facts = await _nudge(session, settings, run, execution, rows,
                                              eligible, {})
        quorum_noted = any(e.kind == EventKind.QUORUM_UNREACHABLE.value for e in earlier)
        if eligible_now is not None and not quorum_noted:
            check = quorum_check(eligible, fresh, APPROVALS_NEEDED)
            if not check.reachable:
                await repo_events.append_event(
                    session, run_id, "bot", Source.BOT, EventKind.QUORUM_UNREACHABLE, step,
                    {**facts, "eligible_left": check.eligible_left,
                     "still_needed": check.still_needed},
                )
                wrote = True
        wrote = wrote or nudged
    if wrote:
        engine.changed(run_id)
    return wrote


async def watch_waiting_resend(engine: Engine, run_id: str,
                               approvers: ApproverSource | None = None) -> bool:
    """One look at the run's resend of step 5 waiting for its second approval: record its
    approvals that expired, so step 5's message shows them so before anyone clicks, and remind
    and page as for a waiting step (the page on an alert of its own, resolved when the resend
    finishes: the run's alert may be resolved already). True if the log grew."""
    settings = engine.settings
    eligible_now = await _eligible_now(approvers)
    async with engine.sessions() as session, session.begin():
        run = await repo_runs.get_run(session, run_id)
        if run is None or RunStatus(run.status) not in RESENDABLE_RUN_STATUSES:
            return False
        latest = await repo_runs.latest_execution(session, run_id, StepName.EMAIL_CLIENTS,
                                                  ExecutionKind.RESEND)
        if latest is None or StepStatus(latest.status) is not StepStatus.AWAITING_APPROVAL:
            return False
        execution = await repo_runs.get_execution(session, latest.id, for_update=True)
        if execution is None or StepStatus(execution.status) is not StepStatus.AWAITING_APPROVAL:
            return False
        rows = await repo_runs.approvers(session, execution.id,
                                         settings.approval_ttl_minutes * 60)
        wrote = await note_expired_approvals(session, run_id, StepName.EMAIL_CLIENTS,
                                             str(execution.id), rows, resend=True)
        eligible = eligible_approvers(
            eligible_now if eligible_now is not None else frozenset(settings.approver_user_ids),
            run.initiator_id, settings.allow_self_approval)
        clients = len((execution.plan or {}).get("clients", []))
        nudged, _, _ = await _nudge(session, settings, run, execution, rows, eligible,
                                    {"resend": True, "clients": clients})
        wrote = wrote or nudged
    if wrote:
        engine.changed(run_id)
    return wrote
