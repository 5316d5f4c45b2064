"""The one place that decides what happens next, and writes it with its incident event.

approve -> (quorum) the step starts; a step's result -> done: the next step is put up for
approval, or the run completes; failed: Retry or Abort; an orphan's check -> done (move on) or
interrupted. The executor and recovery only report what they saw (`StepResult`,
`OrphanVerdict`, `StalledRun`); this module turns that into state. Every state change and its
event share one transaction; a step starts in the same transaction that counts its quorum.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import repo_events, repo_rotations, repo_runs
from bot.db.models import RollbackRun, StepExecution
from bot.domain.approvals import ApprovalContext, Refusal, decide_approval, slow_plan_refusal
from bot.domain.events import EventKind, Source
from bot.domain.ledgers import CLOSES_ROTATION
from bot.domain.plan_parts import SlowPlan
from bot.domain.redaction import Redactor
from bot.domain.states import DONE_STEP_STATUSES, RETRYABLE_STEP_STATUSES, RunStatus, StepStatus
from bot.domain.step_protocol import Step
from bot.domain.steps import STEP_ORDER, StepName, next_step
from bot.engine.answers import Actor, Answer, Click
from bot.engine.approval_watch import note_expired_approvals
from bot.engine.code_revision import code_revision
from bot.engine.contexts import StepContexts
from bot.engine.executor import StepResult
from bot.engine.journal import Journal
from bot.engine.plans import PlanTimeout, bounded_plan, error_plan, plan_to_json, put_up_plan
from bot.engine.recovery import OrphanVerdict, StalledRun
from bot.engine.resends import Resends
from bot.engine.stops import Stops
from bot.settings import Settings

log = logging.getLogger(__name__)

StartExecution = Callable[[str], None]


class Transitions:
    def __init__(
        self, journal: Journal, contexts: StepContexts, steps: Mapping[StepName, Step],
        settings: Settings, replica_id: str, start_execution: StartExecution,
    ) -> None:
        self.journal = journal
        self.contexts = contexts
        self.steps = steps
        self.settings = settings
        self.replica_id = replica_id
        self.start_execution = start_execution
        self.stops = Stops(journal, contexts, steps)
        self.resends = Resends(journal, settings, replica_id, start_execution)

    @property
    def lease_seconds(self) -> float:
        return self.settings.step_lease_seconds

    # --- starting ---------------------------------------------------------------------------

    async def start_run(self, actor: Actor, reason: str, channel_id: str | None) -> Answer:
        if not actor.authorised:
            await self._record_refusal(None, actor, Refusal.NOT_AUTHORISED, None)
            return Answer.refused(Refusal.NOT_AUTHORISED)
        async with self.journal.sessions() as session, session.begin():
            created = await repo_runs.create_run(
                session,
                initiator_id=actor.user_id,
                initiator_name=actor.user_name,
                reason=reason,
                source=actor.source.value,
                channel_id=channel_id,
                target=self.settings.target_name,
            )
            if isinstance(created, repo_runs.ActiveRunExists):
                existing = str(created.run.id)
                await repo_events.append_event(
                    session, existing, actor.user_id, actor.source, EventKind.REFUSED, None,
                    {"why": "another rollback is active", "attempted_reason": reason},
                )
                return Answer.refused(Refusal.ANOTHER_RUN_ACTIVE, run_id=existing)
            run_id = str(created.id)
            rotation_id = await repo_rotations.bind_rotation(session, run_id)
            await repo_events.append_event(
                session, run_id, actor.user_id, actor.source, EventKind.RUN_STARTED, None,
                {"reason": reason, "initiator_name": actor.user_name,
                 "code_revision": code_revision(), **actor.proof(),
                 **({"continues_rotation_of": rotation_id} if rotation_id != run_id else {})},
            )
        self.journal.changed(run_id)
        await self.prepare_step(run_id, STEP_ORDER[0], attempt=1)
        return Answer(True, "rollback started", run_id=run_id)

    async def prepare_step(self, run_id: str, step: StepName, attempt: int) -> None:
        """Compute the step's live plan and put it up for approval, unless it is up already
        (the step's end and a watcher that found the run stalled, here or on another replica,
        may both get here) or the run ended. The plan is made before the run's row is locked:
        it may wait on the target."""
        plan = await put_up_plan(self.steps[step], await self.contexts.for_run(run_id))
        async with self.journal.sessions() as session, session.begin():
            if not await repo_runs.attempt_is_open(session, run_id, step, attempt):
                log.info("%s attempt %d of run %s not put up: already up, or the run ended",
                         step.value, attempt, run_id)
                return
            execution = await repo_runs.create_step_execution(
                session, run_id, step, attempt, plan_to_json(plan), plan.fingerprint
            )
            await repo_runs.set_current_step(session, run_id, step)
            await repo_events.append_event(
                session, run_id, "bot", Source.BOT, EventKind.PLAN_SHOWN, step,
                {"execution_id": str(execution.id), "attempt": attempt,
                 "summary": plan.summary, "fingerprint": plan.fingerprint},
            )
        self.journal.changed(run_id)

    # --- approvals --------------------------------------------------------------------------

    async def _approval_context(
        self, session: AsyncSession, click: Click, execution: StepExecution, run: RollbackRun,
        current_fingerprint: str,
    ) -> ApprovalContext:
        latest = await repo_runs.latest_execution(session, str(run.id), execution.step)
        approvers = await repo_runs.approvers(session, execution.id,
                                              self.settings.approval_ttl_minutes * 60)
        return ApprovalContext(
            user_id=click.actor.user_id,
            authorised=click.actor.authorised,
            initiator_id=run.initiator_id,
            allow_self_approval=self.settings.allow_self_approval,
            step_status=StepStatus(execution.status) if RunStatus(run.status) is RunStatus.ACTIVE
            else StepStatus.ABORTED,
            existing_approvers=frozenset(a.user_id for a in approvers if not a.expired),
            button_execution_id=click.execution_id,
            current_execution_id=str(latest.id) if latest else "",
            button_fingerprint=click.fingerprint,
            current_fingerprint=current_fingerprint,
        )

    async def _refuse_click(self, click: Click, run_id: str, step: StepName,
                            refusal: Refusal, slow: SlowPlan | None = None) -> Answer:
        why = {"why": refusal.value} | ({"slow": slow.describe()} if slow else {})
        async with self.journal.sessions() as session, session.begin():
            await repo_events.append_event(
                session, run_id, click.actor.user_id, click.actor.source, EventKind.REFUSED,
                step, {"execution_id": click.execution_id, **why,
                       "user_name": click.actor.user_name},
            )
        self.journal.changed(run_id)
        message = slow_plan_refusal(slow)[1] if slow else None
        return Answer.refused(refusal, run_id=run_id, message=message)

    async def approve(self, click: Click) -> Answer:
        """Authorise first, from what is stored: a click that would not count (wrong person,
        twice, stale, not waiting) is refused without asking the target anything and changes
        nothing. Only a click that would count re-plans; if the fresh plan differs in what is
        approved (not in its volatile facts), the approvals so far are voided and this click is
        refused as made on the old plan. A re-plan that runs out of time is refused saying what was
        slow: "target busy" when it waited on the target, else the step and its slow part."""
        async with self.journal.sessions() as session:
            execution = await repo_runs.get_execution(session, click.execution_id)
            if execution is None or str(execution.run_id) != click.run_id:
                return Answer.refused(Refusal.STALE_BUTTON)
            run = await repo_runs.get_run(session, execution.run_id)
            assert run is not None
            step, run_id = StepName(execution.step), str(run.id)
            decision = decide_approval(await self._approval_context(
                session, click, execution, run, execution.plan_fingerprint))
        if decision.refusal is not None:
            return await self._refuse_click(click, run_id, step, decision.refusal)
        try:
            fresh = await bounded_plan(self.steps[step], await self.contexts.for_run(run_id))
        except PlanTimeout as exc:
            log.warning("approval of %s by %s not confirmed: %s", step.value,
                        click.actor.user_name, exc)
            refusal, _ = slow_plan_refusal(exc.slow)
            return await self._refuse_click(click, run_id, step, refusal, exc.slow)
        except Exception as exc:  # as the first plan would show it: a warning to read
            fresh = error_plan(step, exc, Redactor.for_settings(self.settings))
        started = False
        async with self.journal.sessions() as session, session.begin():
            execution = await repo_runs.get_execution(session, click.execution_id, for_update=True)
            run = await repo_runs.get_run(session, run_id)
            assert execution is not None and run is not None
            current = execution.plan_fingerprint
            if (StepStatus(execution.status) is StepStatus.AWAITING_APPROVAL
                    and fresh.fingerprint != current):
                voided = await repo_runs.replace_plan(
                    session, execution.id, plan_to_json(fresh), fresh.fingerprint
                )
                await repo_events.append_event(
                    session, run_id, "bot", Source.BOT, EventKind.APPROVALS_VOIDED, step,
                    {"execution_id": str(execution.id), "voided": voided,
                     "old_fingerprint": current, "new_fingerprint": fresh.fingerprint,
                     "summary": fresh.summary},
                )
                current = fresh.fingerprint
            ttl = self.settings.approval_ttl_minutes * 60
            # Expired approvals are recorded (the message shows them) and no longer count.
            await note_expired_approvals(session, run_id, step, str(execution.id),
                                         await repo_runs.approvers(session, execution.id, ttl))
            decision = decide_approval(
                await self._approval_context(session, click, execution, run, current))
            if decision.refusal is not None:
                await repo_events.append_event(
                    session, run_id, click.actor.user_id, click.actor.source, EventKind.REFUSED,
                    step, {"execution_id": click.execution_id, "why": decision.refusal.value,
                           "user_name": click.actor.user_name},
                )
                answer = Answer.refused(decision.refusal, run_id=run_id)
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
                         "count": len(result.fresh), **click.actor.proof()},
                    )
                if result.started:
                    # Leased in the same transaction, so no watcher ever sees it orphaned.
                    await repo_runs.claim_lease(
                        session, str(execution.id), self.replica_id, self.lease_seconds
                    )
                    await repo_events.append_event(
                        session, run_id, "bot", Source.BOT, EventKind.STEP_STARTED, step,
                        {"execution_id": click.execution_id,
                         "approvers": [a.user_name for a in result.fresh]},
                    )
                started = result.started
                answer = (Answer(True, "approved", run_id=run_id) if result.inserted
                          else Answer.refused(Refusal.ALREADY_APPROVED, run_id=run_id))
        self.journal.changed(run_id)
        if started:
            self.start_execution(click.execution_id)
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
            return Answer.refused(Refusal.NOT_AUTHORISED)
        return await self.stops.stop(click, reason, kind, new_status, allowed)

    async def retry(self, click: Click) -> Answer:
        if not click.actor.authorised:
            await self._record_refusal(click.run_id, click.actor, Refusal.NOT_AUTHORISED, None)
            return Answer.refused(Refusal.NOT_AUTHORISED)
        async with self.journal.sessions() as session, session.begin():
            execution = await repo_runs.get_execution(session, click.execution_id, for_update=True)
            run = await repo_runs.get_run(session, click.run_id)
            if execution is None or run is None or str(execution.run_id) != click.run_id:
                return Answer.refused(Refusal.STALE_BUTTON)
            latest = await repo_runs.latest_execution(session, click.run_id, execution.step)
            if (
                latest is None or latest.id != execution.id
                or StepStatus(execution.status) not in RETRYABLE_STEP_STATUSES
                or RunStatus(run.status) is not RunStatus.ACTIVE
            ):
                return Answer.refused(Refusal.NOT_WAITING)
            step, attempt = StepName(execution.step), execution.attempt + 1
            await repo_events.append_event(
                session, click.run_id, click.actor.user_id, click.actor.source,
                EventKind.RETRY_REQUESTED, step,
                {"execution_id": click.execution_id, "user_name": click.actor.user_name,
                 "next_attempt": attempt, **click.actor.proof()},
            )
        await self.prepare_step(click.run_id, step, attempt)
        return Answer(True, f"retry of attempt {attempt - 1} needs two fresh approvals",
                      run_id=click.run_id)

    async def take_over(self, run_id: str, actor: Actor, reason: str) -> Answer:
        """Break-glass: another front (the terminal) takes over a run started elsewhere. Only an
        authorised engineer, with a reason; recorded in the incident log, shown in every view."""
        if not actor.authorised:
            await self._record_refusal(run_id, actor, Refusal.NOT_AUTHORISED, None)
            return Answer.refused(Refusal.NOT_AUTHORISED, run_id=run_id)
        if not reason.strip():
            return Answer(False, "a take-over needs a reason", run_id=run_id)
        async with self.journal.sessions() as session, session.begin():
            run = await repo_runs.get_run(session, run_id, for_update=True)
            if run is None or RunStatus(run.status) is not RunStatus.ACTIVE:
                return Answer.refused(Refusal.NOT_WAITING, run_id=run_id)
            await repo_events.append_event(
                session, run_id, actor.user_id, actor.source, EventKind.TAKEN_OVER, None,
                {"reason": reason, "user_name": actor.user_name, "started_from": run.source,
                 **actor.proof()},
            )
        self.journal.changed(run_id)
        return Answer(True, "taken over", run_id=run_id)

    async def _record_refusal(
        self, run_id: str | None, actor: Actor, refusal: Refusal, step: StepName | None
    ) -> None:
        """In the run's incident log; a refusal for no run, or a run that does not exist (a
        forged or foreign button), has no log to go in and is only logged here."""
        async with self.journal.sessions() as session, session.begin():
            if run_id is None or not await repo_runs.run_exists(session, run_id):
                log.info("refused %s (%s) for no known run: %s", actor.user_name,
                         actor.user_id, refusal.value)
                return
            await repo_events.append_event(
                session, run_id, actor.user_id, actor.source, EventKind.REFUSED, step,
                {"why": refusal.value, "user_name": actor.user_name},
            )

    # --- what the executor and recovery report ----------------------------------------------

    async def step_finished(self, result: StepResult) -> None:
        """Record how a step ended; a done step moves the run on."""
        if result.resend:
            return await self.resends.finished(result)
        kind = {
            StepStatus.SUCCEEDED: EventKind.STEP_SUCCEEDED,
            StepStatus.ALREADY_DONE: EventKind.STEP_ALREADY_DONE,
        }.get(result.status, EventKind.STEP_FAILED)
        async with self.journal.sessions() as session, session.begin():
            finished = await repo_runs.finish_execution(
                session, result.execution_id, result.status, result.facts,
                result.summary if kind is EventKind.STEP_FAILED else None, result.summary,
                owner=self.replica_id,
            )
            if finished:
                await close_rotation_if_done(session, result.run_id, result.step, result.status)
                await repo_events.append_event(
                    session, result.run_id, "bot", Source.BOT, kind, result.step,
                    {"execution_id": result.execution_id, "summary": result.summary,
                     "facts": result.facts, "error_tail": result.error_tail},
                )
        if not finished:
            log.warning("%s of run %s ended here (%s) but this replica no longer holds it: "
                        "not recorded", result.step.value, result.run_id, result.status.value)
            return
        self.journal.changed(result.run_id)
        if result.status in (StepStatus.SUCCEEDED, StepStatus.ALREADY_DONE):
            await self.advance(result.run_id, result.step)

    async def orphan_examined(self, verdict: OrphanVerdict) -> None:
        """A step whose replica died: done -> move on; not in place -> interrupted."""
        if verdict.resend:
            return await self.resends.orphan_examined(verdict)
        done, reason = verdict.done, verdict.reason
        status = StepStatus.ALREADY_DONE if done else StepStatus.INTERRUPTED
        summary = (f"the bot stopped while this step ran; its effect is in place ({reason})"
                   if done else
                   f"the bot stopped while this step ran and its effect is not in place "
                   f"({reason}); Retry needs two fresh approvals")
        async with self.journal.sessions() as session, session.begin():
            if not await repo_runs.finish_execution(
                session, verdict.execution_id, status, {"recovered": True, "check": reason},
                None if done else summary, summary, owner=self.replica_id,
            ):
                return  # taken over meanwhile: whoever holds it now decides
            await close_rotation_if_done(session, verdict.run_id, verdict.step, status)
            await repo_events.append_event(
                session, verdict.run_id, "bot", Source.BOT,
                EventKind.STEP_ALREADY_DONE if done else EventKind.STEP_INTERRUPTED,
                verdict.step,
                {"execution_id": verdict.execution_id, "summary": summary, "check": reason},
            )
        self.journal.changed(verdict.run_id)
        log.warning("recovered %s of run %s: %s", verdict.step.value, verdict.run_id,
                    status.value)
        if done:
            await self.advance(verdict.run_id, verdict.step)

    async def resume_stalled(self, stalled: StalledRun) -> None:
        """A run whose next step was never put up (the bot died in between)."""
        if stalled.last_done is None:
            await self.prepare_step(stalled.run_id, STEP_ORDER[0], attempt=1)
        else:
            await self.advance(stalled.run_id, stalled.last_done)

    async def advance(self, run_id: str, finished: StepName) -> None:
        following = next_step(finished)
        if following is not None:
            await self.prepare_step(run_id, following, attempt=1)
            return
        await self.resends.complete_run(run_id)  # with N unconfirmed deliveries, if any


async def close_rotation_if_done(session: AsyncSession, run_id: str, step: StepName,
                                 status: StepStatus) -> None:
    """Step 5 done closes the run's key rotation: no later run continues it."""
    if step is CLOSES_ROTATION and status in DONE_STEP_STATUSES:
        closed = await repo_rotations.close_rotation(session, run_id)
        if closed:
            log.info("key rotation %s closed by run %s", closed[:8], run_id[:8])
