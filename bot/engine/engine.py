"""The rollback engine as the fronts see it: one object to call, to subscribe to and to read.

Fronts (Slack, the terminal) call `start_run`, `approve`, `reject`, `retry`, `abort`,
`resend`; they learn about changes through `subscribe` and draw `run_view`. The engine never
talks to Slack. Here the parts are wired and the step tasks kept; what happens next is decided
in `transitions`, steps are run by the `executor`, and `recovery` finds what a dead replica
left behind.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_inbox, repo_runs
from bot.domain.approvals import Refusal
from bot.domain.events import Source
from bot.domain.redaction import Redactor
from bot.domain.step_protocol import Plan, Step
from bot.domain.steps import StepName
from bot.domain.views import RunView
from bot.engine import recovery
from bot.engine.answers import Actor, Answer, Click, ClickAction, ReceivedClick
from bot.engine.contexts import StepContexts
from bot.engine.dry_run import DryRun, dry_run
from bot.engine.executor import StepExecutor
from bot.engine.journal import ChangeListener, Journal
from bot.engine.transitions import Transitions
from bot.engine.view_builder import build_run_view
from bot.settings import Settings

__all__ = ["Actor", "Answer", "Click", "ClickAction", "Engine", "ReceivedClick"]

log = logging.getLogger(__name__)

# Whether a user may act on rollbacks; the Slack front knows (user groups), else the settings.
Authoriser = Callable[[str], Awaitable[bool]]
INBOX_GRACE_SECONDS = 1.0  # a click younger than this is its receiving replica's to process


class Engine:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        steps: Mapping[StepName, Step],
        replica_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.target = settings.target_name  # this engine's runs are this target's only
        self.steps = steps
        self.replica_id = replica_id or f"replica-{uuid.uuid4().hex[:8]}"
        self.journal = Journal(sessions)
        contexts = StepContexts(self.journal, settings, self.replica_id)
        self.executor = StepExecutor(self.journal, contexts, steps, settings, self.replica_id)
        self.transitions = Transitions(self.journal, contexts, steps, settings, self.replica_id,
                                       start_execution=self._start_execution)
        self._contexts = contexts
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self.authoriser: Authoriser | None = None

    # --- wiring -----------------------------------------------------------------------------

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.journal.sessions

    def subscribe(self, listener: ChangeListener) -> None:
        self.journal.subscribe(listener)

    def changed(self, run_id: str) -> None:
        self.journal.changed(run_id)

    def spawn(self, coro: Coroutine[Any, Any, None], what: str = "engine task") -> None:
        """Keep a task until it ends; its failure is logged with the traceback, never dropped."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=what)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def _start_execution(self, execution_id: str) -> None:
        self.spawn(self._execute(execution_id), f"step execution {execution_id}")

    async def _execute(self, execution_id: str) -> None:
        """Run the step, then let the transitions record it; an executor that raises (its
        database went away, a bug) is logged and recorded as the step's failure."""
        try:
            result = await self.executor.execute(execution_id)
            if result is not None:
                await self.transitions.step_finished(result)
            return
        except Exception as exc:  # logged with its traceback, through the redactor
            log.error("the executor failed on step execution %s:\n%s", execution_id,
                      Redactor.for_settings(self.settings)(
                          "".join(traceback.format_exception(exc))))
            failure = await self.executor.failed(execution_id, exc)
        if failure is not None:  # recorded only if the step is still running and ours
            await self.transitions.step_finished(failure)

    async def wait_idle(self) -> None:
        """Wait until no step is executing here (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def recover(self, watch: bool = True) -> None:
        """Examine work a dead process left behind; then keep watching other replicas' leases."""
        await self._recover_once()
        if watch and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch_leases(self.executor.lease_seconds / 2))

    async def _recover_once(self) -> int:
        await self.process_inbox()
        verdicts = await recovery.examine_orphans(
            self.journal, self._contexts, self.steps, self.replica_id,
            self.executor.lease_seconds, running_here=set(self.executor.running),
        )
        for verdict in verdicts:
            await self.transitions.orphan_examined(verdict)
        stalled = await recovery.find_stalled_run(self.journal, self.target)
        if stalled is not None:
            await self.transitions.resume_stalled(stalled)
        return len(verdicts)

    async def _watch_leases(self, interval: float) -> None:
        """Other replicas may die mid-step: look for expired leases periodically."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self._recover_once()
            except Exception:
                log.exception("lease watch failed")

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

    async def run_target(self, run_id: str) -> str | None:
        """The target a run belongs to; None when there is no such run."""
        try:
            run_uuid = uuid.UUID(run_id)
        except ValueError:
            return None
        async with self.sessions() as session:
            run = await repo_runs.get_run(session, run_uuid)
            return run.target if run else None

    async def active_run_id(self) -> str | None:
        async with self.sessions() as session:
            run = await repo_runs.get_active_run(session, self.target)
            return str(run.id) if run else None

    async def dry_run(self) -> list[Plan]:
        """Every step's plan against the live target, changing nothing."""
        return (await self.dry_run_report()).plans

    async def dry_run_report(self) -> DryRun:
        """The plans with what the reader must know about them (`rollback-bot plan`'s too)."""
        return await dry_run(self.settings, self.steps, self.sessions)

    # --- what people do (decided by the transitions) -----------------------------------------

    async def start_run(self, actor: Actor, reason: str, channel_id: str | None) -> Answer:
        return await self.transitions.start_run(actor, reason, channel_id)

    async def approve(self, click: Click) -> Answer:
        return await self._foreign(click) or await self.transitions.approve(click)

    async def reject(self, click: Click, reason: str) -> Answer:
        return await self._foreign(click) or await self.transitions.reject(click, reason)

    async def abort(self, click: Click, reason: str) -> Answer:
        return await self._foreign(click) or await self.transitions.abort(click, reason)

    async def retry(self, click: Click) -> Answer:
        return await self._foreign(click) or await self.transitions.retry(click)

    async def _foreign(self, click: Click) -> Answer | None:
        """A click on another target's run is refused here, whoever routed it: this engine's
        settings, steps and approvers are its own target's only."""
        target = await self.run_target(click.run_id)
        if target is None or target == self.target:
            return None
        return Answer.refused(Refusal.OTHER_TARGET, run_id=click.run_id, message=(
            f"this button belongs to the rollback on {target}, not on {self.target}"))

    async def take_over(self, run_id: str, actor: Actor, reason: str) -> Answer:
        return await self.transitions.take_over(run_id, actor, reason)

    async def resend(self, click: Click) -> Answer:
        """One approval of resending step 5's unconfirmed emails (two start it)."""
        return await self._foreign(click) or await self.transitions.resends.resend(click)

    async def run_source(self, run_id: str) -> Source | None:
        """Which front started the run (a take-over is needed to attach another one)."""
        async with self.sessions() as session:
            run = await repo_runs.get_run(session, run_id)
            return Source(run.source) if run else None

    # --- the inbox: what Slack was told OK ---------------------------------------------------

    def authorise_with(self, authoriser: Authoriser) -> None:
        """How clicks processed from the inbox (after a restart) learn who may act."""
        self.authoriser = authoriser

    async def accept_click(self, click: ReceivedClick) -> int:
        """Record a click before its sender is told OK; returns the inbox id to process."""
        async with self.sessions() as session, session.begin():
            return await repo_inbox.add(
                session, action=click.action.value, run_id=click.run_id[:64],
                execution_id=click.execution_id[:64], fingerprint=click.fingerprint[:64],
                user_id=click.user_id, user_name=click.user_name, source=click.source.value,
                reason=click.reason,
            )

    async def process_click(self, inbox_id: int, authorised: bool | None = None) -> Answer | None:
        """Do what an inbox row asks, once; None when it is (being) processed elsewhere.
        `authorised`: already resolved by the front, else asked of the authoriser."""
        claim_seconds = self.settings.plan_timeout_seconds + 10
        async with self.sessions() as session, session.begin():
            row = await repo_inbox.claim(session, inbox_id, self.replica_id, claim_seconds)
        if row is None:
            return None
        if authorised is None:
            authorised = await self._authorised(row.user_id)
        click = Click(Actor(row.user_id, row.user_name, Source(row.source), authorised),
                      row.run_id, row.execution_id, row.fingerprint)
        action = ClickAction(row.action)
        if action is ClickAction.APPROVE:
            answer = await self.approve(click)
        elif action is ClickAction.RETRY:
            answer = await self.retry(click)
        elif action is ClickAction.RESEND:
            answer = await self.resend(click)
        elif action is ClickAction.ABORT:
            answer = await self.abort(click, row.reason or f"aborted by {row.user_name}")
        else:
            answer = await self.reject(click, row.reason or f"rejected by {row.user_name}")
        async with self.sessions() as session, session.begin():
            await repo_inbox.processed(session, inbox_id, {
                "accepted": answer.accepted, "message": answer.message,
                "refusal": answer.refusal.value if answer.refusal else None})
        return answer

    async def process_inbox(self, older_than_seconds: float = INBOX_GRACE_SECONDS) -> int:
        """Clicks acknowledged but never processed (their replica died); returns how many."""
        async with self.sessions() as session:
            pending = await repo_inbox.pending_ids(session, older_than_seconds, self.target)
        done = 0
        for inbox_id in pending:
            if await self.process_click(inbox_id) is not None:
                log.warning("processed click %d left unprocessed by a replica that stopped",
                            inbox_id)
                done += 1
        return done

    async def _authorised(self, user_id: str) -> bool:
        if self.authoriser is not None:
            return await self.authoriser(user_id)
        return user_id in self.settings.approver_user_ids
