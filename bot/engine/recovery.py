"""After a crash: every step that was running without a live lease is examined by its `check`.

Effect in place -> marked done, and the run moves on to the next approval. Not in place -> the step
is interrupted: the thread says so and Retry needs a fresh two-person approval. Nothing is re-run
blindly (no second downgrade, no second email).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bot.db import repo_events, repo_runs
from bot.domain.events import EventKind, Source
from bot.domain.states import DONE_STEP_STATUSES, RunStatus, StepStatus
from bot.domain.steps import STEP_ORDER, StepName, next_step

if TYPE_CHECKING:
    from bot.engine.engine import Engine

log = logging.getLogger(__name__)


async def recover_orphans(engine: Engine) -> int:
    """Examine orphaned running steps and stalled runs; returns how many steps were examined."""
    async with engine.sessions() as session:
        orphans = await repo_runs.find_orphaned_running(session)
    for execution in orphans:
        await _examine(engine, str(execution.id))
    await _resume_stalled_runs(engine)
    return len(orphans)


async def _examine(engine: Engine, execution_id: str) -> None:
    async with engine.sessions() as session, session.begin():
        if not await repo_runs.claim_lease(session, execution_id, engine.replica_id,
                                           engine.executor.lease_seconds):
            return  # another replica is examining it
        execution = await repo_runs.get_execution(session, execution_id)
        assert execution is not None
        run_id, step = str(execution.run_id), StepName(execution.step)
        earlier = await engine.earlier_facts(session, run_id)
    try:
        check = await engine.steps[step].check(engine.context(run_id, earlier))
        done, reason = check.done, check.reason
    except Exception as exc:
        done, reason = False, f"could not check: {exc}"
    status = StepStatus.ALREADY_DONE if done else StepStatus.INTERRUPTED
    summary = (f"the bot stopped while this step ran; its effect is in place ({reason})" if done
               else f"the bot stopped while this step ran and its effect is not in place "
                    f"({reason}); Retry needs two fresh approvals")
    async with engine.sessions() as session, session.begin():
        await repo_runs.finish_execution(
            session, execution_id, status, {"recovered": True, "check": reason},
            None if done else summary, summary,
        )
        await repo_runs.release_lease(session, execution_id, engine.replica_id)
        await repo_events.append_event(
            session, run_id, "bot", Source.BOT,
            EventKind.STEP_ALREADY_DONE if done else EventKind.STEP_INTERRUPTED, step,
            {"execution_id": execution_id, "summary": summary, "check": reason},
        )
    engine.changed(run_id)
    log.warning("recovered %s of run %s: %s", step.value, run_id, status.value)
    if done:
        await engine.advance(run_id, step)


async def _resume_stalled_runs(engine: Engine) -> None:
    """An active run whose last step is done but whose next step was never put up."""
    async with engine.sessions() as session:
        run = await repo_runs.get_active_run(session)
        if run is None or RunStatus(run.status) is not RunStatus.ACTIVE:
            return
        run_id = str(run.id)
        last_done: StepName | None = None
        for name in STEP_ORDER:
            execution = await repo_runs.latest_execution(session, run_id, name)
            if execution is None:
                break
            if StepStatus(execution.status) not in DONE_STEP_STATUSES:
                return  # waiting, running, failed or interrupted: nothing to resume
            last_done = name
    if last_done is None:
        await engine.prepare_step(run_id, STEP_ORDER[0], attempt=1)
    elif next_step(last_done) is not None:
        await engine.prepare_step(run_id, next_step(last_done), attempt=1)  # type: ignore[arg-type]
    else:
        await engine.advance(run_id, last_done)


async def watch_leases(engine: Engine, interval: float) -> None:
    """Other replicas may die mid-step: look for expired leases periodically."""
    while True:
        await asyncio.sleep(interval)
        try:
            await recover_orphans(engine)
        except Exception:
            log.exception("lease watch failed")
