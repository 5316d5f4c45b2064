"""After a crash: what a dead replica left behind, found and examined — never acted upon here.

`examine_orphans` claims every running step whose lease expired and asks its `check` whether
the effect is in place; `find_stalled_run` finds an active run whose last step is done but whose
next step was never put up. The transitions decide what follows from each finding (done -> the
next approval; not in place -> interrupted, Retry needs two fresh approvals). Nothing is re-run
blindly (no second downgrade, no second email).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from bot.db import repo_runs
from bot.domain.redaction import Redactor
from bot.domain.resend import UNCONFIRMED, prefixes
from bot.domain.states import DONE_STEP_STATUSES, ExecutionKind, RunStatus, StepStatus
from bot.domain.step_protocol import CheckResult, Step, StepContext
from bot.domain.steps import STEP_ORDER, StepName
from bot.engine.contexts import StepContexts
from bot.engine.journal import Journal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrphanVerdict:
    """A running step nobody held, now leased to this replica, and what its check said."""

    execution_id: str
    run_id: str
    step: StepName
    done: bool
    reason: str
    resend: bool = False  # a resend of step 5's unconfirmed emails


@dataclass(frozen=True)
class StalledRun:
    """An active run with nothing waiting or running; `last_done` is None before step 1."""

    run_id: str
    last_done: StepName | None


async def examine_orphans(
    journal: Journal, contexts: StepContexts, steps: Mapping[StepName, Step], replica_id: str,
    lease_seconds: float, running_here: Collection[str] = (),
) -> list[OrphanVerdict]:
    """`running_here`: executions this replica runs right now. Never ours to examine: if their
    lease lapsed, their own lease keeper stops them and says so."""
    async with journal.sessions() as session:
        orphans = await repo_runs.find_orphaned_running(session, contexts.settings.target_name)
    verdicts: list[OrphanVerdict] = []
    for execution in orphans:
        execution_id = str(execution.id)
        if execution_id in running_here:
            continue
        async with journal.sessions() as session, session.begin():
            if not await repo_runs.claim_lease(session, execution_id, replica_id, lease_seconds):
                continue  # another replica is examining it
        run_id, step = str(execution.run_id), StepName(execution.step)
        limit = contexts.settings.step_timeout_seconds
        resend = execution.kind == ExecutionKind.RESEND.value
        try:
            async with asyncio.timeout(limit):  # a check is bounded like the step itself
                ctx = await contexts.for_run(run_id)
                check = await (resend_in_place(ctx, (execution.plan or {}).get("clients", []))
                               if resend else steps[step].check(ctx))
            done, reason = check.done, check.reason
        except TimeoutError:
            done, reason = False, f"could not check within {limit:g} s"
        except Exception as exc:
            done, reason = False, f"could not check: {exc}"
        redact = Redactor.for_settings(contexts.settings)
        verdicts.append(OrphanVerdict(execution_id, run_id, step, done, redact(reason),
                                      resend))
    return verdicts


async def resend_in_place(ctx: StepContext, clients: Sequence[str]) -> CheckResult:
    """A resend whose replica died: done when none of its clients is unconfirmed any more (in
    the run's rotation's ledger, which a run continuing an earlier rotation shares)."""
    records = await ctx.notifications.records(ctx.rotation_id)
    left = [c for c in clients if c in records and records[c].status in UNCONFIRMED]
    if left:
        return CheckResult(False, f"{len(left)} still unconfirmed: {', '.join(prefixes(left))}")
    return CheckResult(True, "every client of the resend is recorded sent")


async def find_stalled_run(journal: Journal, target: str | None = None) -> StalledRun | None:
    async with journal.sessions() as session:
        run = await repo_runs.get_active_run(session, target)
        if run is None or RunStatus(run.status) is not RunStatus.ACTIVE:
            return None
        run_id = str(run.id)
        last_done: StepName | None = None
        for name in STEP_ORDER:
            execution = await repo_runs.latest_execution(session, run_id, name)
            if execution is None:
                break
            if StepStatus(execution.status) not in DONE_STEP_STATUSES:
                return None  # waiting, running, failed or interrupted: nothing to resume
            last_done = name
    return StalledRun(run_id, last_done)
