"""Decisions about resending step 5's unconfirmed emails, beside `transitions` (which calls in
here for a resend's results and for how a run ends).

A Resend click counts as one approval of a resend execution (a `step_executions` row of kind
`resend`, approved, leased and fenced like a step): the first counting click creates it, bound
to the unconfirmed clients of that moment; the second distinct approver starts it. A run whose
last step is done ends `completed_unconfirmed` while any client is unconfirmed, and becomes
plain `completed` once a resend leaves none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import repo_events, repo_resends, repo_runs
from bot.db.models import RollbackRun, StepExecution
from bot.domain.approvals import ApprovalContext, Refusal, decide_approval
from bot.domain.events import EventKind, Source
from bot.domain.resend import (
    DUPLICATES_WARNING,
    prefixes,
    resend_fingerprint,
    resend_refusal,
)
from bot.domain.states import DONE_STEP_STATUSES, ExecutionKind, RunStatus, StepStatus
from bot.domain.steps import StepName
from bot.engine.answers import Answer, Click
from bot.engine.approval_watch import note_expired_approvals
from bot.engine.executor import StepResult
from bot.engine.journal import Journal
from bot.engine.recovery import OrphanVerdict
from bot.settings import Settings

log = logging.getLogger(__name__)

StartExecution = Callable[[str], None]
EMAIL = StepName.EMAIL_CLIENTS
RESEND = ExecutionKind.RESEND


def resend_plan(clients: Sequence[str]) -> dict[str, object]:
    named = ", ".join(prefixes(clients))
    return {"summary": f"resend to {len(clients)} unconfirmed clients: {named}",
            "details": [], "warnings": [DUPLICATES_WARNING], "clients": list(clients)}


class Resends:
    def __init__(self, journal: Journal, settings: Settings, replica_id: str,
                 start_execution: StartExecution) -> None:
        self.journal = journal
        self.settings = settings
        self.replica_id = replica_id
        self.start_execution = start_execution

    async def resend(self, click: Click) -> Answer:
        """One approval of a resend to the unconfirmed clients, as the button showed them."""
        started, answer = False, None
        ttl = self.settings.approval_ttl_minutes * 60
        async with self.journal.sessions() as session, session.begin():
            button = await repo_runs.get_execution(session, click.execution_id)
            if button is None or str(button.run_id) != click.run_id or button.step != EMAIL:
                return Answer.refused(Refusal.STALE_BUTTON)
            run = await repo_runs.get_run(session, click.run_id, for_update=True)
            assert run is not None
            refusal, waiting, clients = await self._situation(session, run, button)
            fingerprint = resend_fingerprint(clients)
            if refusal is None and waiting is not None and waiting.plan_fingerprint != fingerprint:
                await self._void(session, run, waiting, clients, fingerprint)
            rows = [] if waiting is None else await repo_runs.approvers(session, waiting.id, ttl)
            if waiting is not None:  # expired ones are recorded (the message shows them)
                await note_expired_approvals(session, click.run_id, EMAIL, str(waiting.id),
                                             rows, resend=True)
            existing = frozenset(a.user_id for a in rows if not a.expired)
            refusal = refusal or decide_approval(ApprovalContext(
                user_id=click.actor.user_id, authorised=click.actor.authorised,
                initiator_id=run.initiator_id,
                allow_self_approval=self.settings.allow_self_approval,
                step_status=StepStatus.AWAITING_APPROVAL, existing_approvers=existing,
                button_execution_id="", current_execution_id="",
                button_fingerprint=click.fingerprint, current_fingerprint=fingerprint)).refusal
            if refusal is not None:
                await repo_events.append_event(
                    session, click.run_id, click.actor.user_id, click.actor.source,
                    EventKind.REFUSED, EMAIL, {"execution_id": click.execution_id, "resend": True,
                                               "why": refusal.value,
                                               "user_name": click.actor.user_name})
                answer = Answer.refused(refusal, run_id=click.run_id)
            else:
                if waiting is None:
                    waiting = await repo_runs.create_step_execution(
                        session, click.run_id, EMAIL, await repo_resends.resend_count(
                            session, click.run_id) + 1, resend_plan(clients), fingerprint, RESEND)
                started = await self._approve(session, click, waiting, fingerprint, ttl)
                answer = Answer(True, "resend approved" + (": sending" if started else
                                                           "; a second engineer must approve"),
                                run_id=click.run_id)
        self.journal.changed(click.run_id)
        if started and waiting is not None:
            self.start_execution(str(waiting.id))
        return answer

    async def _situation(self, session: AsyncSession, run: RollbackRun, button: StepExecution
                         ) -> tuple[Refusal | None, StepExecution | None, list[str]]:
        """Why not now (or None), the resend waiting for approvals, the unconfirmed clients."""
        run_id = str(run.id)
        step = await repo_runs.latest_execution(session, run_id, EMAIL)
        if button.kind == ExecutionKind.STEP.value and (step is None or step.id != button.id):
            return Refusal.STALE_BUTTON, None, []
        latest = await repo_runs.latest_execution(session, run_id, EMAIL, RESEND)
        clients = await repo_resends.unconfirmed_clients(session, run_id)
        active = await repo_runs.get_active_run(session, run.target)
        status = StepStatus(latest.status) if latest is not None else None
        refusal = resend_refusal(
            RunStatus(run.status),
            email_step_done=step is not None and StepStatus(step.status) in DONE_STEP_STATUSES,
            clients=clients, another_run_active=active is not None and active.id != run.id,
            resend_running=status is StepStatus.RUNNING)
        waiting = latest if status is StepStatus.AWAITING_APPROVAL else None
        return refusal, waiting, clients

    async def _void(self, session: AsyncSession, run: RollbackRun, waiting: StepExecution,
                    clients: list[str], fingerprint: str) -> None:
        """The unconfirmed clients changed since the resend was asked for: approvals void."""
        plan = resend_plan(clients)
        voided = await repo_runs.replace_plan(session, waiting.id, plan, fingerprint)
        await repo_events.append_event(
            session, str(run.id), "bot", Source.BOT, EventKind.APPROVALS_VOIDED, EMAIL,
            {"execution_id": str(waiting.id), "voided": voided, "resend": True,
             "old_fingerprint": waiting.plan_fingerprint, "new_fingerprint": fingerprint,
             "summary": plan["summary"]})
        waiting.plan_fingerprint = fingerprint

    async def _approve(self, session: AsyncSession, click: Click, waiting: StepExecution,
                       fingerprint: str, ttl: float) -> bool:
        result = await repo_runs.add_approval(
            session, waiting.id, click.actor.user_id, click.actor.user_name, fingerprint,
            click.actor.source.value, ttl_seconds=ttl)
        data = {"execution_id": str(waiting.id), "resend": True}
        if result.inserted:
            await repo_events.append_event(
                session, click.run_id, click.actor.user_id, click.actor.source,
                EventKind.APPROVAL_GIVEN, EMAIL, {**data, "user_name": click.actor.user_name,
                                                  "count": len(result.fresh),
                                                  **click.actor.proof()})
        if result.started:  # leased in the same transaction, as a step is
            await repo_runs.claim_lease(session, str(waiting.id), self.replica_id,
                                        self.settings.step_lease_seconds)
            await repo_events.append_event(
                session, click.run_id, "bot", Source.BOT, EventKind.RESEND_STARTED, EMAIL,
                {**data, "clients": prefixes((waiting.plan or {}).get("clients", [])),
                 "approvers": [a.user_name for a in result.fresh]})
        return result.started

    # --- how a resend ended, and how a run ends ---------------------------------------------

    async def finished(self, result: StepResult) -> None:
        async with self.journal.sessions() as session, session.begin():
            if not await repo_runs.finish_execution(
                session, result.execution_id, result.status, result.facts,
                result.summary if result.status is StepStatus.FAILED else None, result.summary,
                owner=self.replica_id,
            ):
                log.warning("a resend of run %s ended here but this replica no longer holds "
                            "it: not recorded", result.run_id)
                return
            await repo_events.append_event(
                session, result.run_id, "bot", Source.BOT, EventKind.RESEND_FINISHED, EMAIL,
                {"execution_id": result.execution_id, "status": result.status.value,
                 "summary": result.summary, "facts": result.facts})
        self.journal.changed(result.run_id)
        await self.settle(result.run_id)

    async def orphan_examined(self, verdict: OrphanVerdict) -> None:
        """A resend whose replica died: its clients still unconfirmed stay so (Resend again)."""
        status = StepStatus.ALREADY_DONE if verdict.done else StepStatus.INTERRUPTED
        summary = (f"the bot stopped while resending; {verdict.reason}" + (
            "" if verdict.done else "; Resend again needs two fresh approvals"))
        async with self.journal.sessions() as session, session.begin():
            if not await repo_runs.finish_execution(
                session, verdict.execution_id, status, {"recovered": True},
                None if verdict.done else summary, summary, owner=self.replica_id,
            ):
                return
            await repo_events.append_event(
                session, verdict.run_id, "bot", Source.BOT, EventKind.RESEND_FINISHED, EMAIL,
                {"execution_id": verdict.execution_id, "status": status.value,
                 "summary": summary})
        self.journal.changed(verdict.run_id)
        await self.settle(verdict.run_id)

    async def settle(self, run_id: str) -> None:
        """A run that ended with unconfirmed deliveries and has none left: plain completed."""
        async with self.journal.sessions() as session, session.begin():
            run = await repo_runs.get_run(session, run_id, for_update=True)
            if run is None or RunStatus(run.status) is not RunStatus.COMPLETED_UNCONFIRMED \
                    or await repo_resends.unconfirmed_clients(session, run_id):
                return
            await repo_resends.confirm_run(session, run_id)
            await repo_events.append_event(
                session, run_id, "bot", Source.BOT, EventKind.DELIVERIES_CONFIRMED, None, {})
        self.journal.changed(run_id)

    async def complete_run(self, run_id: str) -> None:
        """Every step done: completed, or completed with N unconfirmed deliveries. Once: a
        run another transition (here or on another replica) already ended is left as it is."""
        async with self.journal.sessions() as session, session.begin():
            clients = await repo_resends.unconfirmed_clients(session, run_id)
            status = RunStatus.COMPLETED_UNCONFIRMED if clients else RunStatus.COMPLETED
            if not await repo_runs.finish_run(session, run_id, status, None):
                log.info("run %s had already ended: not completed again", run_id)
                return
            await repo_events.append_event(
                session, run_id, "bot", Source.BOT, EventKind.RUN_COMPLETED, None,
                {"unconfirmed": prefixes(clients)} if clients else {})
        self.journal.changed(run_id)

