"""Reject and Abort: the run stops, and says what the stop leaves behind.

A stopped run may leave work a later run continues (step 4's key rotation: clients keyed but
not mailed, the work table of new keys in the target). Before the stop is written, while the
run's rotation is open, each step that began in this run (or every one, when this run continues
an earlier run's rotation) and that can tell (`LeavesWorkBehind`) is asked, within the plan
deadline; its lines go into the stop's log entry, which every front
draws, and into the answer to the person who clicked. A click that would be refused is refused
from what is stored, without asking the target anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import repo_events, repo_rotations, repo_runs
from bot.db.models import StepExecution
from bot.domain.approvals import Refusal
from bot.domain.events import EventKind
from bot.domain.redaction import Redactor
from bot.domain.states import RunStatus, StepStatus
from bot.domain.step_protocol import LeavesWorkBehind, Step
from bot.domain.steps import STEP_ORDER, StepName
from bot.engine.answers import Answer, Click
from bot.engine.contexts import StepContexts
from bot.engine.journal import Journal

log = logging.getLogger(__name__)


class Stops:
    def __init__(self, journal: Journal, contexts: StepContexts,
                 steps: Mapping[StepName, Step]) -> None:
        self.journal = journal
        self.contexts = contexts
        self.steps = steps

    async def stop(self, click: Click, reason: str, kind: EventKind, new_status: StepStatus,
                   allowed: set[StepStatus]) -> Answer:
        """Stops the run at the clicked step (already authorised by the caller)."""
        async with self.journal.sessions() as session:
            early = await _stoppable(session, click, allowed)
        if isinstance(early, Refusal):
            return Answer.refused(early)
        left = await self.left_behind(click.run_id)
        async with self.journal.sessions() as session, session.begin():
            execution = await _stoppable(session, click, allowed, for_update=True)
            if isinstance(execution, Refusal):
                return Answer.refused(execution)
            await repo_runs.set_execution_status(session, execution.id, new_status)
            await repo_runs.finish_run(session, click.run_id, RunStatus.ABORTED, reason)
            data: dict[str, object] = {"execution_id": click.execution_id, "reason": reason,
                                       "user_name": click.actor.user_name,
                                       **click.actor.proof()}
            if left:
                data["left_behind"] = list(left)
            await repo_events.append_event(session, click.run_id, click.actor.user_id,
                                           click.actor.source, kind, execution.step, data)
        self.journal.changed(click.run_id)
        return Answer(True, "rollback stopped" + "".join(f". {line}" for line in left),
                      run_id=click.run_id)

    async def left_behind(self, run_id: str) -> tuple[str, ...]:
        """What the steps that can tell say a stop now leaves behind."""
        ctx = await self.contexts.for_run(run_id)
        async with self.journal.sessions() as session:
            if await repo_rotations.is_closed(session, ctx.rotation_id):
                return ()  # step 5 was done: no later run continues anything
            began = {StepName(e.step) for e in await repo_runs.executions_for_run(session, run_id)
                     if e.started_at is not None}
        redact = Redactor.for_settings(ctx.settings)
        lines: list[str] = []
        for name in STEP_ORDER:
            step = self.steps.get(name)
            if not isinstance(step, LeavesWorkBehind) or not (
                    name in began or ctx.continues_rotation):
                continue
            try:
                async with asyncio.timeout(ctx.settings.plan_timeout_seconds):
                    lines += [redact(line) for line in await step.left_behind(ctx)]
            except Exception as exc:  # a stop is never refused for this
                why = "no answer in time" if isinstance(exc, TimeoutError) else redact(str(exc))
                log.warning("what %s leaves behind is unknown: %s", name.value, why)
                lines.append(f"what step {name.value} leaves behind could not be read ({why}); "
                             f"a new run's plan shows it")
        return tuple(lines)


async def _stoppable(session: AsyncSession, click: Click, allowed: set[StepStatus],
                     for_update: bool = False) -> StepExecution | Refusal:
    """The clicked execution if the run may be stopped there, else why not."""
    execution = await repo_runs.get_execution(session, click.execution_id, for_update=for_update)
    if execution is None or str(execution.run_id) != click.run_id:
        return Refusal.STALE_BUTTON
    latest = await repo_runs.latest_execution(session, click.run_id, execution.step)
    if latest is None or latest.id != execution.id or StepStatus(execution.status) not in allowed:
        return Refusal.NOT_WAITING
    return execution
