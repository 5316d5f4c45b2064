"""The rollback engine as the fronts see it: one object to call, to subscribe to and to read.

Fronts (Slack, the terminal) call `start_run`, `approve`, `reject`, `retry`, `abort`; they learn
about changes through `subscribe` and draw `run_view`. The engine never talks to Slack. Here the
parts are wired and the step tasks kept; what happens next is decided in `transitions`, steps
are run by the `executor`, and `recovery` finds what a dead replica left behind.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_runs
from bot.domain.step_protocol import Plan, Step
from bot.domain.steps import StepName
from bot.domain.views import RunView
from bot.engine import recovery
from bot.engine.answers import Actor, Answer, Click
from bot.engine.contexts import StepContexts
from bot.engine.dry_run import dry_run
from bot.engine.executor import StepExecutor
from bot.engine.journal import ChangeListener, Journal
from bot.engine.transitions import Transitions
from bot.engine.view_builder import build_run_view
from bot.settings import Settings

__all__ = ["Actor", "Answer", "Click", "Engine"]

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        steps: Mapping[StepName, Step],
        replica_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.steps = steps
        self.replica_id = replica_id or f"replica-{uuid.uuid4().hex[:8]}"
        self.journal = Journal(sessions)
        contexts = StepContexts(self.journal, settings)
        self.executor = StepExecutor(self.journal, contexts, steps, settings, self.replica_id)
        self.transitions = Transitions(self.journal, contexts, steps, settings, self.replica_id,
                                       start_execution=self._start_execution)
        self._contexts = contexts
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None

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
        except Exception as exc:
            log.exception("the executor failed on step execution %s", execution_id)
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
        verdicts = await recovery.examine_orphans(
            self.journal, self._contexts, self.steps, self.replica_id,
            self.executor.lease_seconds,
        )
        for verdict in verdicts:
            await self.transitions.orphan_examined(verdict)
        stalled = await recovery.find_stalled_run(self.journal)
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

    async def active_run_id(self) -> str | None:
        async with self.sessions() as session:
            run = await repo_runs.get_active_run(session)
            return str(run.id) if run else None

    async def dry_run(self) -> list[Plan]:
        """Every step's plan against the live target, changing nothing."""
        return await dry_run(self.settings, self.steps)

    # --- what people do (decided by the transitions) -----------------------------------------

    async def start_run(self, actor: Actor, reason: str, channel_id: str | None) -> Answer:
        return await self.transitions.start_run(actor, reason, channel_id)

    async def approve(self, click: Click) -> Answer:
        return await self.transitions.approve(click)

    async def reject(self, click: Click, reason: str) -> Answer:
        return await self.transitions.reject(click, reason)

    async def abort(self, click: Click, reason: str) -> Answer:
        return await self.transitions.abort(click, reason)

    async def retry(self, click: Click) -> Answer:
        return await self.transitions.retry(click)
