"""Step 3: restore the Phase 2 code (optional command) and restart the api, then wait for health.

Restart strategies: `docker` (the containers matched by compose labels or name, via aiodocker)
or `command` (a configured command, for deployments without Docker). Restarting twice is
harmless, so when `check` cannot tell whether the restart happened it errs on re-running it.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bot.domain.steps import StepName
from bot.settings import RestartStrategy, Settings
from steps.containers import ContainerEngine, ContainerState, docker_engine, selector
from steps.process import run_process
from steps.protocol import CheckResult, Outcome, OutputSink, Plan, StepContext, StepError

POLL_SECONDS = 0.5


async def _health(settings: Settings) -> tuple[int | None, dict[str, Any] | str]:
    url = settings.api_base_url.rstrip("/") + settings.api_health_path
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
                http.get(url) as answer:
            try:
                body: dict[str, Any] | str = await answer.json(content_type=None)
            except ValueError:
                body = (await answer.text())[:200]
            return answer.status, body
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


async def wait_healthy(
    settings: Settings, engine: ContainerEngine | None, containers: list[ContainerState],
) -> str:
    """Poll until every container runs and is healthy (its healthcheck, else the health URL)."""
    deadline = time.monotonic() + settings.health_timeout_seconds
    last = "not polled yet"
    while time.monotonic() < deadline:
        states = [await engine.inspect(c.id) for c in containers] if engine else []
        down = [s for s in states if s.status != "running"]
        checked = [s for s in states if s.health is not None]
        if down:
            last = ", ".join(f"{s.name} is {s.status}" for s in down)
        elif checked and any(s.health != "healthy" for s in checked):
            last = ", ".join(f"{s.name} health {s.health}" for s in checked)
        elif checked and len(checked) == len(states):
            return "Docker healthcheck healthy"
        else:
            status, body = await _health(settings)
            if status == 200:
                return f"{settings.api_health_path} answered 200"
            last = f"{settings.api_health_path} answered {status or 'nothing'}: {body}"
        await asyncio.sleep(POLL_SECONDS)
    names = ", ".join(c.name for c in containers) or settings.api_base_url
    raise StepError(f"api {names} not healthy after {settings.health_timeout_seconds:g} s: {last}")


class RestartStep:
    name = StepName.RESTART

    async def plan(self, ctx: StepContext) -> Plan:
        s = ctx.settings
        restore = s.code_restore_command or "(no code-restore command configured)"
        details = [f"code restore: `{restore}` in {s.code_restore_workdir}"]
        warnings: list[str] = []
        names: list[str] = []
        if s.restart_strategy is RestartStrategy.COMMAND:
            if not s.restart_command:
                warnings.append("RESTART_STRATEGY=command but RESTART_COMMAND is empty")
            details.append(f"restart: `{s.restart_command}`")
        else:
            async with docker_engine(s) as engine:
                found = await engine.find()
            names = sorted(c.name for c in found)
            _, words = selector(s)
            if not found:
                warnings.append(f"no container matches {words}: nothing to restart")
            details += [f"restart {c.name} ({c.short_id}), {c.status} since {c.started_at}"
                        for c in found]
        return Plan(
            step=self.name,
            summary=f"restore Phase 2 code and restart {', '.join(names) or 'the api'}",
            facts={"code_restore": s.code_restore_command, "strategy": s.restart_strategy.value,
                   "containers": names, "restart_command": s.restart_command},
            details=tuple(details), warnings=tuple(warnings),
        )

    async def check(self, ctx: StepContext) -> CheckResult:
        status, body = await _health(ctx.settings)
        if status == 200 and isinstance(body, dict) and body.get("phase") == 2:
            return CheckResult(True, "the api reports Phase 2 code")
        return CheckResult(False, "cannot tell whether the restart happened; re-running it is safe")

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        s = ctx.settings
        facts: dict[str, Any] = {}
        if s.code_restore_command:
            emit(f"$ {s.code_restore_command}")
            result = await run_process(shlex.split(s.code_restore_command), emit=emit,
                                       cwd=s.code_restore_workdir)
            if result.returncode != 0:
                raise StepError(f"code restore failed (exit {result.returncode}): "
                                + " | ".join(result.tail[-3:]))
            facts["code_restore"] = s.code_restore_command
        restarted_at = datetime.now(UTC)
        facts["restarted_at"] = restarted_at.isoformat()
        if s.restart_strategy is RestartStrategy.COMMAND:
            if not s.restart_command:
                raise StepError("RESTART_STRATEGY=command but RESTART_COMMAND is empty")
            emit(f"$ {s.restart_command}")
            result = await run_process(shlex.split(s.restart_command), emit=emit)
            if result.returncode != 0:
                raise StepError(f"restart command failed (exit {result.returncode}): "
                                + " | ".join(result.tail[-3:]))
            emit(await wait_healthy(s, None, []))
            return Outcome(summary="api restarted by command", facts=facts)
        async with docker_engine(s) as engine:
            found = await engine.find()
            if not found:
                raise StepError(f"no api container matches {selector(s)[1]}")
            for container in found:
                emit(f"restarting {container.name} ({container.short_id})")
                await engine.restart(container.id)
            try:
                emit(await wait_healthy(s, engine, found))
            except StepError:
                for container in found:
                    for line in (await engine.logs_since(container.id, restarted_at))[-10:]:
                        emit(f"{container.name}| {line}")
                raise
            after = {c.id: await engine.inspect(c.id) for c in found}
        facts["containers"] = [
            {"name": c.name, "id": c.short_id, "started_before": c.started_at,
             "started_after": after[c.id].started_at} for c in found
        ]
        names = ", ".join(c.name for c in found)
        return Outcome(summary=f"restarted {names}; healthy", facts=facts)
