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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.db import repo_events, repo_runs
from bot.domain.events import EventKind
from bot.domain.states import StepStatus
from bot.domain.step_protocol import Outcome, Step, StepError
from bot.domain.steps import StepName
from bot.engine.contexts import StepContexts
from bot.engine.journal import Journal
from bot.engine.output import OutputBuffer, Redactor
from bot.settings import Settings
from bot.urls import password_of

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


def secret_values(settings: Settings) -> list[str]:
    secrets = [
        v.get_secret_value()
        for v in (settings.slack_bot_token, settings.slack_signing_secret,
                  settings.slack_app_token, settings.smtp_password)
        if v is not None
    ]
    for url in (settings.target_database_url, settings.database_url):
        if url is not None:
            password = password_of(url.get_secret_value())
            if password:
                secrets.append(password)
    return secrets


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

    async def execute(self, execution_id: str) -> StepResult | None:
        """Claim, check, run under the step timeout, stream output; None when claimed elsewhere."""
        async with self.journal.sessions() as session, session.begin():
            claimed = await repo_runs.claim_lease(
                session, execution_id, self.replica_id, self.lease_seconds
            )
            execution = await repo_runs.get_execution(session, execution_id)
        if not claimed or execution is None:
            log.info("execution %s claimed elsewhere", execution_id)
            return None
        run_id, step_name = str(execution.run_id), StepName(execution.step)
        step = self.steps[step_name]
        ctx = await self.contexts.for_run(run_id)
        output = OutputBuffer(Redactor(secret_values(self.settings)))
        heartbeat = asyncio.create_task(self._heartbeat(execution_id))
        flusher = asyncio.create_task(self._flush_loop(run_id, step_name, execution_id, output))
        started = time.monotonic()
        status, summary, error_tail = StepStatus.FAILED, "", list[str]()
        facts: dict[str, Any] = {}
        timeout = self.settings.step_timeout_seconds
        try:
            check = await step.check(ctx)
            if check.done:
                status, summary = StepStatus.ALREADY_DONE, f"already done: {check.reason}"
                facts = {"already_done": check.reason}
            else:
                async with asyncio.timeout(timeout):
                    outcome: Outcome = await step.run(ctx, output.emit)
                status, summary, facts = StepStatus.SUCCEEDED, outcome.summary, dict(outcome.facts)
        except StepError as exc:
            summary = str(exc)
        except TimeoutError:
            summary = f"timed out after {timeout:g} s"
        except asyncio.CancelledError:
            # Shutdown: leave the step running with its lease; recovery decides what happened.
            heartbeat.cancel()
            flusher.cancel()
            raise
        except Exception as exc:
            log.exception("step %s crashed", step_name)
            summary = f"unexpected error: {type(exc).__name__}: {exc}"
        finally:
            heartbeat.cancel()
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        await self._flush(run_id, step_name, execution_id, output)
        if status is StepStatus.FAILED:
            error_tail = await self._tail(run_id, execution_id)
        facts = {**facts, "duration_s": round(time.monotonic() - started, 3),
                 "output_lines": output.total}
        return StepResult(execution_id, run_id, step_name, status, summary, facts, error_tail)

    async def failed(self, execution_id: str, exc: Exception) -> StepResult | None:
        """The result of an execution whose executor raised: a failure that says why."""
        async with self.journal.sessions() as session:
            execution = await repo_runs.get_execution(session, execution_id)
        if execution is None:
            return None
        return StepResult(execution_id, str(execution.run_id), StepName(execution.step),
                          StepStatus.FAILED,
                          f"the bot failed while running this step: {type(exc).__name__}: {exc}")

    async def _heartbeat(self, execution_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                async with self.journal.sessions() as session, session.begin():
                    await repo_runs.renew_lease(
                        session, execution_id, self.replica_id, self.lease_seconds
                    )
            except Exception:
                log.exception("lease renewal failed for %s", execution_id)

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
