"""The rollback engine: turns approvals into step executions and records every event first.

Fronts (Slack, the terminal) call `start_run`, `approve`, `reject`, `retry`, `abort`; they learn
about changes through `subscribe` and draw `run_view`. The engine never talks to Slack. Every
state change and its incident event are written in one transaction; a step starts in the same
transaction that counts its quorum.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_events, repo_runs
from bot.db.ledgers import SqlNotificationLedger, SqlRotationLedger
from bot.domain.approvals import (
    REFUSAL_TEXT,
    ApprovalContext,
    Refusal,
    decide_approval,
)
from bot.domain.events import EventKind, Source
from bot.domain.states import DONE_STEP_STATUSES, RETRYABLE_STEP_STATUSES, RunStatus, StepStatus
from bot.domain.step_protocol import Plan, Step, StepContext
from bot.domain.steps import STEP_ORDER, StepName, next_step
from bot.domain.views import RunView
from bot.engine.approval_watch import note_expired_approvals
from bot.engine.executor import StepExecutor
from bot.engine.plans import safe_plan
from bot.engine.view_builder import build_run_view
from bot.settings import Settings

log = logging.getLogger(__name__)

ChangeListener = Callable[[str], None]


@dataclass(frozen=True)
class Actor:
    user_id: str
    user_name: str
    source: Source
    authorised: bool


@dataclass(frozen=True)
class Click:
    """A button press (or its terminal equivalent) on one step execution."""

    actor: Actor
    run_id: str
    execution_id: str
    fingerprint: str = ""


@dataclass(frozen=True)
class Answer:
    """What the front tells the person who acted: accepted or refused, and why."""

    accepted: bool
    message: str
    run_id: str | None = None


class Engine:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        steps: Mapping[StepName, Step],
        replica_id: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.steps = steps
        self.replica_id = replica_id or f"replica-{uuid.uuid4().hex[:8]}"
        self._listeners: list[ChangeListener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self.executor = StepExecutor(self)

    # --- wiring -----------------------------------------------------------------------------

    def subscribe(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def changed(self, run_id: str) -> None:
        for listener in self._listeners:
            try:
                listener(run_id)
            except Exception:  # a broken view must never stop the engine
                log.exception("change listener failed")

    def context(self, run_id: str, earlier: Mapping[StepName, Mapping[str, Any]]) -> StepContext:
        return StepContext(
            run_id=run_id,
            settings=self.settings,
            rotations=SqlRotationLedger(self.sessions),
            notifications=SqlNotificationLedger(self.sessions),
            earlier_facts=earlier,
        )

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        """Wait until no step is executing here (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def recover(self, watch: bool = True) -> None:
        """Examine work a dead process left behind; then keep watching other replicas' leases."""
        from bot.engine.recovery import recover_orphans, watch_leases

        await recover_orphans(self)
        if watch and self._watcher is None:
            self._watcher = asyncio.create_task(
                watch_leases(self, self.executor.lease_seconds / 2)
            )

    async def shutdown(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- reading ----------------------------------------------------------------------------

    async def run_view(self, run_id: str) -> RunView:
        async with self.sessions() as session:
            return await build_run_view(session, run_id)

    async def active_run_id(self) -> str | None:
        async with self.sessions() as session:
            run = await repo_runs.get_active_run(session)
            return str(run.id) if run else None

    async def dry_run(self) -> list[Plan]:
        """Every step's plan against the live target, changing nothing."""
        from bot.engine.dry_run import dry_run

        return await dry_run(self.settings, self.steps)

    async def earlier_facts(
        self, session: AsyncSession, run_id: str
    ) -> dict[StepName, Mapping[str, Any]]:
        facts: dict[StepName, Mapping[str, Any]] = {}
        for name in STEP_ORDER:
            execution = await repo_runs.latest_execution(session, run_id, name)
            if execution is not None and StepStatus(execution.status) in DONE_STEP_STATUSES:
                facts[name] = execution.facts or {}
        return facts

    # --- starting ---------------------------------------------------------------------------

    async def start_run(self, actor: Actor, reason: str, channel_id: str | None) -> Answer:
        if not actor.authorised:
            await self._record_refusal(None, actor, Refusal.NOT_AUTHORISED, None)
            return Answer(False, REFUSAL_TEXT[Refusal.NOT_AUTHORISED])
        async with self.sessions() as session, session.begin():
            created = await repo_runs.create_run(
                session,
                initiator_id=actor.user_id,
                initiator_name=actor.user_name,
                reason=reason,
                source=actor.source.value,
                channel_id=channel_id,
            )
            if isinstance(created, repo_runs.ActiveRunExists):
                existing = str(created.run.id)
                await repo_events.append_event(
                    session, existing, actor.user_id, actor.source, EventKind.REFUSED, None,
                    {"why": "another rollback is active", "attempted_reason": reason},
                )
                return Answer(False, "another rollback is already active", run_id=existing)
            run_id = str(created.id)
            await repo_events.append_event(
                session, run_id, actor.user_id, actor.source, EventKind.RUN_STARTED, None,
                {"reason": reason, "initiator_name": actor.user_name},
            )
        self.changed(run_id)
        await self.prepare_step(run_id, STEP_ORDER[0], attempt=1)
        return Answer(True, "rollback started", run_id=run_id)

    async def prepare_step(self, run_id: str, step: StepName, attempt: int) -> None:
        """Compute the step's live plan and put it up for approval."""
        async with self.sessions() as session:
            earlier = await self.earlier_facts(session, run_id)
        plan = await safe_plan(self.steps[step], self.context(run_id, earlier))
        async with self.sessions() as session, session.begin():
            execution = await repo_runs.create_step_execution(
                session, run_id, step, attempt, plan_to_json(plan), plan.fingerprint
            )
            await repo_runs.set_current_step(session, run_id, step)
            await repo_events.append_event(
                session, run_id, "bot", Source.BOT, EventKind.PLAN_SHOWN, step,
                {"execution_id": str(execution.id), "attempt": attempt,
                 "summary": plan.summary, "fingerprint": plan.fingerprint},
            )
        self.changed(run_id)

    # --- approvals --------------------------------------------------------------------------

    async def approve(self, click: Click) -> Answer:
        async with self.sessions() as session:
            execution = await repo_runs.get_execution(session, click.execution_id)
            if execution is None or str(execution.run_id) != click.run_id:
                return Answer(False, REFUSAL_TEXT[Refusal.STALE_BUTTON])
            step = StepName(execution.step)
            run_id = str(execution.run_id)
            earlier = await self.earlier_facts(session, run_id)
        fresh = None
        if StepStatus(execution.status) is StepStatus.AWAITING_APPROVAL:
            fresh = await safe_plan(self.steps[step], self.context(run_id, earlier))
        started = False
        async with self.sessions() as session, session.begin():
            execution = await repo_runs.get_execution(session, click.execution_id, for_update=True)
            assert execution is not None
            run = await repo_runs.get_run(session, run_id)
            assert run is not None
            latest = await repo_runs.latest_execution(session, run_id, step)
            status = StepStatus(execution.status)
            if (
                fresh is not None
                and status is StepStatus.AWAITING_APPROVAL
                and fresh.fingerprint != execution.plan_fingerprint
            ):
                voided = await repo_runs.replace_plan(
                    session, execution.id, plan_to_json(fresh), fresh.fingerprint
                )
                await repo_events.append_event(
                    session, run_id, "bot", Source.BOT, EventKind.APPROVALS_VOIDED, step,
                    {"execution_id": str(execution.id), "voided": voided,
                     "old_fingerprint": execution.plan_fingerprint,
                     "new_fingerprint": fresh.fingerprint, "summary": fresh.summary},
                )
            ttl = self.settings.approval_ttl_minutes * 60
            approvers = await repo_runs.approvers(session, execution.id, ttl)
            # Expired approvals are recorded (the message shows them) and no longer count.
            await note_expired_approvals(session, run_id, step, str(execution.id), approvers)
            approvers = [a for a in approvers if not a.expired]
            decision = decide_approval(
                ApprovalContext(
                    user_id=click.actor.user_id,
                    authorised=click.actor.authorised,
                    initiator_id=run.initiator_id,
                    allow_self_approval=self.settings.allow_self_approval,
                    step_status=status if RunStatus(run.status) is RunStatus.ACTIVE
                    else StepStatus.ABORTED,
                    existing_approvers=frozenset(a.user_id for a in approvers),
                    button_execution_id=click.execution_id,
                    current_execution_id=str(latest.id) if latest else "",
                    button_fingerprint=click.fingerprint,
                    current_fingerprint=execution.plan_fingerprint,
                )
            )
            if decision.refusal is not None:
                await repo_events.append_event(
                    session, run_id, click.actor.user_id, click.actor.source, EventKind.REFUSED,
                    step, {"execution_id": click.execution_id, "why": decision.refusal.value,
                           "user_name": click.actor.user_name},
                )
                answer = Answer(False, REFUSAL_TEXT[decision.refusal], run_id=run_id)
            else:
                result = await repo_runs.add_approval(
                    session, execution.id, click.actor.user_id, click.actor.user_name,
                    click.fingerprint, click.actor.source.value, ttl_seconds=ttl,
                )
                if result.inserted:
                    await repo_events.append_event(
                        session, run_id, click.actor.user_id, click.actor.source,
                        EventKind.APPROVAL_GIVEN, step,
                        {"execution_id": click.execution_id, "user_name": click.actor.user_name,
                         "count": len(result.fresh)},
                    )
                if result.started:
                    # Leased in the same transaction, so no watcher ever sees it orphaned.
                    await repo_runs.claim_lease(
                        session, str(execution.id), self.replica_id, self.executor.lease_seconds
                    )
                    await repo_events.append_event(
                        session, run_id, "bot", Source.BOT, EventKind.STEP_STARTED, step,
                        {"execution_id": click.execution_id,
                         "approvers": [a.user_name for a in result.fresh]},
                    )
                started = result.started
                answer = Answer(result.inserted, "approved" if result.inserted
                                else REFUSAL_TEXT[Refusal.ALREADY_APPROVED], run_id=run_id)
        self.changed(run_id)
        if started:
            self.spawn(self.executor.execute(click.execution_id))
        return answer

    async def reject(self, click: Click, reason: str) -> Answer:
        return await self._stop_run(click, reason, EventKind.STEP_REJECTED, StepStatus.REJECTED,
                                    allowed={StepStatus.AWAITING_APPROVAL})

    async def abort(self, click: Click, reason: str) -> Answer:
        return await self._stop_run(click, reason, EventKind.RUN_ABORTED, StepStatus.ABORTED,
                                    allowed=set(RETRYABLE_STEP_STATUSES)
                                    | {StepStatus.AWAITING_APPROVAL})

    async def _stop_run(
        self, click: Click, reason: str, kind: EventKind, new_status: StepStatus,
        allowed: set[StepStatus],
    ) -> Answer:
        if not click.actor.authorised:
            await self._record_refusal(click.run_id, click.actor, Refusal.NOT_AUTHORISED, None)
            return Answer(False, REFUSAL_TEXT[Refusal.NOT_AUTHORISED])
        async with self.sessions() as session, session.begin():
            execution = await repo_runs.get_execution(session, click.execution_id, for_update=True)
            if execution is None or str(execution.run_id) != click.run_id:
                return Answer(False, REFUSAL_TEXT[Refusal.STALE_BUTTON])
            latest = await repo_runs.latest_execution(session, click.run_id, execution.step)
            status = StepStatus(execution.status)
            if latest is None or latest.id != execution.id or status not in allowed:
                return Answer(False, REFUSAL_TEXT[Refusal.NOT_WAITING])
            await repo_runs.set_execution_status(session, execution.id, new_status)
            await repo_runs.finish_run(session, click.run_id, RunStatus.ABORTED, reason)
            await repo_events.append_event(
                session, click.run_id, click.actor.user_id, click.actor.source, kind,
                execution.step, {"execution_id": click.execution_id, "reason": reason,
                                 "user_name": click.actor.user_name},
            )
        self.changed(click.run_id)
        return Answer(True, "rollback stopped", run_id=click.run_id)

    async def retry(self, click: Click) -> Answer:
        if not click.actor.authorised:
            await self._record_refusal(click.run_id, click.actor, Refusal.NOT_AUTHORISED, None)
            return Answer(False, REFUSAL_TEXT[Refusal.NOT_AUTHORISED])
        async with self.sessions() as session, session.begin():
            execution = await repo_runs.get_execution(session, click.execution_id, for_update=True)
            run = await repo_runs.get_run(session, click.run_id)
            if execution is None or run is None or str(execution.run_id) != click.run_id:
                return Answer(False, REFUSAL_TEXT[Refusal.STALE_BUTTON])
            latest = await repo_runs.latest_execution(session, click.run_id, execution.step)
            if (
                latest is None or latest.id != execution.id
                or StepStatus(execution.status) not in RETRYABLE_STEP_STATUSES
                or RunStatus(run.status) is not RunStatus.ACTIVE
            ):
                return Answer(False, REFUSAL_TEXT[Refusal.NOT_WAITING])
            step, attempt = StepName(execution.step), execution.attempt + 1
            await repo_events.append_event(
                session, click.run_id, click.actor.user_id, click.actor.source,
                EventKind.RETRY_REQUESTED, step,
                {"execution_id": click.execution_id, "user_name": click.actor.user_name,
                 "next_attempt": attempt},
            )
        await self.prepare_step(click.run_id, step, attempt)
        return Answer(True, f"retry of attempt {attempt - 1} needs two fresh approvals",
                      run_id=click.run_id)

    async def _record_refusal(
        self, run_id: str | None, actor: Actor, refusal: Refusal, step: StepName | None
    ) -> None:
        if run_id is None:
            log.info("refused %s (%s): %s", actor.user_name, actor.user_id, refusal.value)
            return
        async with self.sessions() as session, session.begin():
            await repo_events.append_event(
                session, run_id, actor.user_id, actor.source, EventKind.REFUSED, step,
                {"why": refusal.value, "user_name": actor.user_name},
            )

    # --- after a step -----------------------------------------------------------------------

    async def advance(self, run_id: str, finished: StepName) -> None:
        following = next_step(finished)
        if following is not None:
            await self.prepare_step(run_id, following, attempt=1)
            return
        async with self.sessions() as session, session.begin():
            await repo_runs.finish_run(session, run_id, RunStatus.COMPLETED, None)
            await repo_events.append_event(
                session, run_id, "bot", Source.BOT, EventKind.RUN_COMPLETED, None, {}
            )
        self.changed(run_id)


def plan_to_json(plan: Plan) -> dict[str, Any]:
    return {
        "summary": plan.summary,
        "facts": dict(plan.facts),
        "details": list(plan.details),
        "warnings": list(plan.warnings),
    }
