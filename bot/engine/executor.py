"""Runs one approved step execution and returns how it ended; it decides nothing further.

The lease (a row-level claim with an expiry in database time, renewed by a heartbeat) makes
exactly one replica execute a step; a replica that dies stops renewing, and another one finds
the step orphaned. What happens after the step — record it, put up the next step, end the run —
is the transitions' business: `execute` only returns a `StepResult`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.db import repo_events, repo_runs
from bot.domain.events import EventKind
from bot.domain.redaction import Redactor
from bot.domain.resend import Resender
from bot.domain.states import ExecutionKind, StepStatus
from bot.domain.step_protocol import Outcome, Step, StepContext, StepError
from bot.domain.steps import StepName
from bot.engine.contexts import StepContexts
from bot.engine.journal import Journal
from bot.engine.output import OutputBuffer
from bot.settings import Settings

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5
ERROR_TAIL_LINES = 20


@dataclass(frozen=True)
class StepResult:
    """How one execution ended, as the executor saw it."""

    execution_id: str
    run_id: str
    step: StepName
    status: StepStatus
    summary: str
    facts: dict[str, Any] = field(default_factory=dict)
    error_tail: list[str] = field(default_factory=list)
    resend: bool = False  # a resend of step 5's unconfirmed emails, not the step itself


class StepExecutor:
    def __init__(
        self, journal: Journal, contexts: StepContexts, steps: Mapping[StepName, Step],
        settings: Settings, replica_id: str,
    ) -> None:
        self.journal = journal
        self.contexts = contexts
        self.steps = steps
        self.settings = settings
        self.replica_id = replica_id
        self.lease_seconds = settings.step_lease_seconds
        self.running: set[str] = set()  # executions this replica runs now: recovery skips them

    async def execute(self, execution_id: str) -> StepResult | None:
        """Claim, check, run under the step timeout, stream output; None when claimed elsewhere."""
        claimed_at = time.monotonic()  # before the claim: the lease runs from when it applied
        async with self.journal.sessions() as session, session.begin():
            claimed = await repo_runs.claim_lease(
                session, execution_id, self.replica_id, self.lease_seconds
            )
            execution = await repo_runs.get_execution(session, execution_id)
        if not claimed or execution is None:
            log.info("execution %s claimed elsewhere", execution_id)
            return None
        self.running.add(execution_id)
        try:
            resend = tuple((execution.plan or {}).get("clients", ())) \
                if execution.kind == ExecutionKind.RESEND.value else None
            return await self._execute_leased(execution_id, str(execution.run_id),
                                              StepName(execution.step), claimed_at, resend)
        finally:
            self.running.discard(execution_id)

    async def _execute_leased(
        self, execution_id: str, run_id: str, step_name: StepName, claimed_at: float,
        resend: tuple[str, ...] | None = None,
    ) -> StepResult:
        step = self.steps[step_name]
        ctx = await self.contexts.for_run(run_id, execution_id)
        redact = Redactor.for_settings(self.settings)
        output = OutputBuffer(redact)
        started = time.monotonic()
        work = asyncio.create_task(self._check_and_run(step, ctx, output, redact, resend),
                                   name=f"{step_name.value} {execution_id}")
        fence = LeaseKeeper(self, execution_id, work, claimed_at)
        keeper = asyncio.create_task(fence.keep())
        flusher = asyncio.create_task(self._flush_loop(run_id, step_name, execution_id, output))
        try:
            status, summary, facts = await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if fence.lost is None or (current is not None and current.cancelling()):
                raise  # shutdown: the step stays running with its lease; recovery decides
            # Fenced: the step (and the programs it ran) stopped before the lease could lapse.
            status, summary, facts = (StepStatus.INTERRUPTED,
                                      f"stopped on this replica: {fence.lost}", {})
        finally:
            for task in (keeper, flusher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        error_tail: list[str] = []
        if fence.lost is None:
            await self._flush(run_id, step_name, execution_id, output)
            if status is StepStatus.FAILED:
                error_tail = await self._tail(run_id, execution_id)
        facts = {**redact.value(facts), "duration_s": round(time.monotonic() - started, 3),
                 "output_lines": output.total}
        return StepResult(execution_id, run_id, step_name, status, redact(summary), facts,
                          [redact(line) for line in error_tail], resend is not None)

    async def _check_and_run(
        self, step: Step, ctx: StepContext, output: OutputBuffer, redact: Redactor,
        resend: tuple[str, ...] | None = None,
    ) -> tuple[StepStatus, str, dict[str, Any]]:
        """The step's own work, under the step timeout (its check included); a resend sends
        to its approved clients, without the step's check."""
        timeout = self.settings.step_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                if resend is not None:
                    if not isinstance(step, Resender):
                        raise StepError(f"step {step.name} cannot resend")
                    resent = await step.resend(ctx, output.emit, resend)
                    return StepStatus.SUCCEEDED, resent.summary, dict(resent.facts)
                check = await step.check(ctx)
                if check.done:
                    return (StepStatus.ALREADY_DONE, f"already done: {check.reason}",
                            {"already_done": check.reason})
                outcome: Outcome = await step.run(ctx, output.emit)
            return StepStatus.SUCCEEDED, outcome.summary, dict(outcome.facts)
        except StepError as exc:
            return StepStatus.FAILED, str(exc), {}
        except TimeoutError:
            return StepStatus.FAILED, f"timed out after {timeout:g} s", {}
        except Exception as exc:  # the traceback too may quote a secret: redacted
            log.error("step %s crashed:\n%s", step.name,
                      redact("".join(traceback.format_exception(exc))))
            return StepStatus.FAILED, f"unexpected error: {type(exc).__name__}: {exc}", {}

    async def failed(self, execution_id: str, exc: Exception) -> StepResult | None:
        """The result of an execution whose executor raised: a failure that says why."""
        async with self.journal.sessions() as session:
            execution = await repo_runs.get_execution(session, execution_id)
        if execution is None:
            return None
        redact = Redactor.for_settings(self.settings)
        return StepResult(execution_id, str(execution.run_id), StepName(execution.step),
                          StepStatus.FAILED, redact(
                              f"the bot failed while running this step: {type(exc).__name__}: "
                              f"{exc}"))

    async def _flush_loop(
        self, run_id: str, step: StepName, execution_id: str, output: OutputBuffer
    ) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self._flush(run_id, step, execution_id, output)
            except Exception:
                log.exception("could not store step output")

    async def _flush(
        self, run_id: str, step: StepName, execution_id: str, output: OutputBuffer
    ) -> None:
        first, lines = output.drain()
        if not lines:
            return
        await self.journal.append(run_id, EventKind.STEP_OUTPUT, step,
                                  {"execution_id": execution_id, "first": first, "lines": lines})

    async def _tail(self, run_id: str, execution_id: str) -> list[str]:
        async with self.journal.sessions() as session:
            return await repo_events.output_tail(session, run_id, execution_id, ERROR_TAIL_LINES)


class LeaseKeeper:
    """Renews an execution's lease, and fences the step when it cannot.

    The lease lapses `lease_seconds` after the last renewal the database applied, on the
    database's clock; this replica only knows it applied no earlier than when it was sent. So
    when no renewal sent in the last two thirds of a lease was confirmed (the bot database is
    stalled, unreachable, or the lease was taken), the step's task is cancelled — which kills
    the programs it runs — a third of a lease before anyone else may claim it.
    """

    def __init__(self, executor: StepExecutor, execution_id: str, work: asyncio.Task[Any],
                 confirmed_at: float) -> None:
        self.executor = executor
        self.execution_id = execution_id
        self.work = work
        self.confirmed_at = confirmed_at  # monotonic time a confirmed renewal was sent
        self.lost: str | None = None
        self._renewals: set[asyncio.Task[bool]] = set()

    async def keep(self) -> None:
        lease = self.executor.lease_seconds
        next_at = self.confirmed_at + lease / 3
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            sent = time.monotonic()
            next_at = sent + lease / 3
            # A task of its own: a stalled database must not hold up the fence (a cancelled
            # query may wait for the database to clean up).
            renewal = asyncio.create_task(self._renew())
            self._renewals.add(renewal)
            renewal.add_done_callback(self._renewals.discard)
            deadline = self.confirmed_at + lease * 2 / 3
            done, _ = await asyncio.wait({renewal}, timeout=max(0.0, deadline - sent))
            if not done:
                renewal.cancel()
                return self._fence("the bot database did not confirm its lease in time")
            try:
                renewed = renewal.result()
            except Exception as exc:
                log.warning("lease renewal failed for %s: %s", self.execution_id, exc)
                next_at = min(next_at, deadline)
                continue
            if not renewed:
                return self._fence("another replica holds its lease now")
            self.confirmed_at = sent

    async def _renew(self) -> bool:
        executor = self.executor
        async with executor.journal.sessions() as session, session.begin():
            return await repo_runs.renew_lease(
                session, self.execution_id, executor.replica_id, executor.lease_seconds
            )

    def _fence(self, why: str) -> None:
        log.error("fencing step execution %s: %s; stopping it", self.execution_id, why)
        self.lost = why
        self.work.cancel()
