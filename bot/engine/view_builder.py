"""Builds the RunView a front draws, from the bot's database alone (any replica can draw it)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import repo_deliveries, repo_events, repo_follow_ups, repo_resends, repo_runs
from bot.db.models import RollbackRun
from bot.db.repo_runs import ApproverRow
from bot.domain.approvals import APPROVALS_NEEDED
from bot.domain.events import EventKind
from bot.domain.log_chain import LogHead
from bot.domain.resend import RESENDABLE_RUN_STATUSES, prefixes, resend_fingerprint
from bot.domain.states import (
    DONE_STEP_STATUSES,
    FINAL_RUN_STATUSES,
    ExecutionKind,
    RunStatus,
    StepStatus,
)
from bot.domain.steps import STEP_ORDER, StepName
from bot.domain.views import ApproverView, PlanView, ResendView, RunView, StepView

TAIL_LINES = 12


async def build_run_view(session: AsyncSession, run_id: str) -> RunView:
    run = await repo_runs.get_run(session, run_id)
    if run is None:
        raise LookupError(f"no rollback run {run_id}")
    steps: list[StepView] = []
    for name in STEP_ORDER:
        execution = await repo_runs.latest_execution(session, run_id, name)
        if execution is None:
            steps.append(StepView(step=name, execution_id=None, attempt=0, status=None, plan=None))
            continue
        plan = execution.plan or {}
        approvers = await repo_runs.approvers(session, execution.id)
        status = StepStatus(execution.status)
        expired = await _expired(session, run_id, approvers) \
            if approvers and status is StepStatus.AWAITING_APPROVAL else set()
        tail, count = await repo_events.output_summary(
            session, run_id, str(execution.id), TAIL_LINES
        )
        facts = dict(execution.facts or {})
        steps.append(
            StepView(
                step=StepName(name),
                execution_id=str(execution.id),
                attempt=execution.attempt,
                status=status,
                plan=PlanView(
                    summary=plan.get("summary", ""),
                    details=tuple(plan.get("details", ())),
                    warnings=tuple(plan.get("warnings", ())),
                    fingerprint=execution.plan_fingerprint,
                ),
                approvers=tuple(ApproverView(a.user_id, a.user_name, a.approval_id in expired,
                                             a.source)
                                for a in approvers),
                approvals_needed=APPROVALS_NEEDED,
                started_at=execution.started_at,
                finished_at=execution.finished_at,
                output_tail=tuple(tail),
                output_line_count=count,
                summary=execution.summary,
                facts=facts,
                error_tail=tuple(tail) if status is StepStatus.FAILED else (),
                resend=await resend_view(session, run) if name is StepName.EMAIL_CLIENTS
                and status in DONE_STEP_STATUSES else None,
            )
        )
    stops = [e for kind in (EventKind.RUN_ABORTED, EventKind.STEP_REJECTED)
             for e in await repo_events.events_of_kind(session, run_id, kind)]
    left_behind = tuple(max(stops, key=lambda e: e.id).data.get("left_behind", ())) \
        if stops else ()
    notices = tuple(
        f"Taken over at the terminal by {e.data.get('user_name', e.actor)}: "
        f"{e.data.get('reason', '')}"
        for e in await repo_events.events_of_kind(session, run_id, EventKind.TAKEN_OVER))
    head = await repo_events.chain_head(session, run_id)
    return RunView(
        run_id=str(run.id),
        status=RunStatus(run.status),
        initiator_id=run.initiator_id,
        initiator_name=run.initiator_name,
        reason=run.reason,
        created_at=run.created_at,
        finished_at=run.finished_at,
        steps=tuple(steps),
        abort_reason=run.abort_reason,
        left_behind=left_behind,
        channel_id=run.channel_id,
        thread_ts=run.thread_ts,
        target=run.target,
        notices=notices,
        follow_ups=await repo_follow_ups.follow_ups(session, run_id)
        if RunStatus(run.status) in FINAL_RUN_STATUSES else (),
        unconfirmed=next((s.resend.clients for s in steps if s.resend is not None), ()),
        log_head=LogHead(*head) if head is not None else None,
    )


async def resend_view(session: AsyncSession, run: RollbackRun) -> ResendView:
    run_id = str(run.id)
    clients = await repo_resends.unconfirmed_clients(session, run_id)
    latest = await repo_runs.latest_execution(session, run_id, StepName.EMAIL_CLIENTS,
                                              ExecutionKind.RESEND)
    status = StepStatus(latest.status) if latest is not None else None
    fingerprint = resend_fingerprint(clients)
    waiting = latest is not None and status is StepStatus.AWAITING_APPROVAL \
        and latest.plan_fingerprint == fingerprint
    approvers = await repo_runs.approvers(session, latest.id, None) \
        if waiting and latest is not None else []
    expired = await _expired(session, run_id, approvers) if approvers else set()
    return ResendView(
        clients=tuple(prefixes(clients)), fingerprint=fingerprint,
        offered=bool(clients) and status is not StepStatus.RUNNING
        and RunStatus(run.status) in RESENDABLE_RUN_STATUSES,
        execution_id=str(latest.id) if latest is not None else None, status=status,
        approvers=tuple(ApproverView(a.user_id, a.user_name, a.approval_id in expired,
                                             a.source)
                        for a in approvers),
        summary=latest.summary if latest is not None else None)


async def _expired(session: AsyncSession, run_id: str, rows: list[ApproverRow]) -> set[int]:
    """Approvals the log records as expired (approval_watch.note_expired_approvals), as long as
    they were not renewed since by approving again."""
    recorded = {(e.data.get("approval_id"), e.data.get("approved_at")) for e in
                await repo_deliveries.events_of(session, run_id, (EventKind.APPROVAL_EXPIRED,))}
    return {row.approval_id for row in rows if row.approved_at is not None
            and (row.approval_id, row.approved_at.isoformat()) in recorded}
