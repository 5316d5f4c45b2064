"""Runs one approved step execution: lease, check, run with a timeout, stream output, record.

The lease (a row-level claim with an expiry, renewed by a heartbeat) makes exactly one replica
execute a step; a replica that dies stops renewing, and another one finds the step orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from bot.db import repo_events, repo_runs
from bot.domain.events import EventKind, Source
from bot.domain.states import StepStatus
from bot.domain.step_protocol import Outcome, StepError
from bot.domain.steps import StepName
from bot.engine.output import OutputBuffer, Redactor

if TYPE_CHECKING:
    from bot.engine.engine import Engine

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5
ERROR_TAIL_LINES = 20


class StepExecutor:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lease_seconds = engine.settings.step_lease_seconds

    def _redactor(self) -> Redactor:
        s = self.engine.settings
        secrets = [
            v.get_secret_value()
            for v in (s.slack_bot_token, s.slack_signing_secret, s.slack_app_token, s.smtp_password)
            if v is not None
        ]
        from bot.urls import password_of

        for url in (s.target_database_url, s.database_url):
            if url is not None:
                password = password_of(url.get_secret_value())
                if password:
                    secrets.append(password)
        return Redactor(secrets)

    async def execute(self, execution_id: str) -> None:
        engine = self.engine
        async with engine.sessions() as session, session.begin():
            claimed = await repo_runs.claim_lease(
                session, execution_id, engine.replica_id, self.lease_seconds
            )
            execution = await repo_runs.get_execution(session, execution_id)
        if not claimed or execution is None:
            log.info("execution %s claimed elsewhere", execution_id)
            return
        run_id, step_name = str(execution.run_id), StepName(execution.step)
        step = engine.steps[step_name]
        async with engine.sessions() as session:
            earlier = await engine.earlier_facts(session, run_id)
        ctx = engine.context(run_id, earlier)
        output = OutputBuffer(self._redactor())
        heartbeat = asyncio.create_task(self._heartbeat(execution_id))
        flusher = asyncio.create_task(self._flush_loop(run_id, step_name, execution_id, output))
        started = time.monotonic()
        status, summary, error_tail = StepStatus.FAILED, "", list[str]()
        facts: dict[str, Any] = {}
        try:
            check = await step.check(ctx)
            if check.done:
                status, summary = StepStatus.ALREADY_DONE, f"already done: {check.reason}"
                facts = {"already_done": check.reason}
            else:
                async with asyncio.timeout(engine.settings.step_timeout_seconds):
                    outcome: Outcome = await step.run(ctx, output.emit)
                status, summary, facts = StepStatus.SUCCEEDED, outcome.summary, dict(outcome.facts)
        except StepError as exc:
            summary = str(exc)
        except TimeoutError:
            summary = f"timed out after {engine.settings.step_timeout_seconds:g} s"
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
        await self._finish(run_id, step_name, execution_id, status, summary, facts, error_tail)
        if status in (StepStatus.SUCCEEDED, StepStatus.ALREADY_DONE):
            await engine.advance(run_id, step_name)

    async def _finish(
        self, run_id: str, step: StepName, execution_id: str, status: StepStatus,
        summary: str, facts: dict[str, Any], error_tail: list[str],
    ) -> None:
        kind = {
            StepStatus.SUCCEEDED: EventKind.STEP_SUCCEEDED,
            StepStatus.ALREADY_DONE: EventKind.STEP_ALREADY_DONE,
        }.get(status, EventKind.STEP_FAILED)
        async with self.engine.sessions() as session, session.begin():
            await repo_runs.finish_execution(
                session, execution_id, status, facts, summary if kind is EventKind.STEP_FAILED
                else None, summary,
            )
            await repo_runs.release_lease(session, execution_id, self.engine.replica_id)
            await repo_events.append_event(
                session, run_id, "bot", Source.BOT, kind, step,
                {"execution_id": execution_id, "summary": summary, "facts": facts,
                 "error_tail": error_tail},
            )
        self.engine.changed(run_id)

    async def _heartbeat(self, execution_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                async with self.engine.sessions() as session, session.begin():
                    await repo_runs.renew_lease(
                        session, execution_id, self.engine.replica_id, self.lease_seconds
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
        async with self.engine.sessions() as session, session.begin():
            await repo_events.append_event(
                session, run_id, "bot", Source.BOT, EventKind.STEP_OUTPUT, step,
                {"execution_id": execution_id, "first": first, "lines": lines},
            )
        self.engine.changed(run_id)

    async def _tail(self, run_id: str, execution_id: str) -> list[str]:
        async with self.engine.sessions() as session:
            return await repo_events.output_tail(session, run_id, execution_id, ERROR_TAIL_LINES)
