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

from bot.domain.step_protocol import CheckResult, Outcome, OutputSink, Plan, StepContext, StepError
from bot.domain.steps import StepName
from bot.settings import RestartStrategy, Settings
from steps.containers import ContainerEngine, ContainerState, docker_engine, selector
from steps.http_probe import HttpProbe, get_once, join_url
from steps.process import run_process

POLL_SECONDS = 0.25
LOG_LINES_ON_FAILURE = 20
STOPPED = frozenset({"exited", "dead"})  # Docker restarts nothing from here ("restarting" is)


def health_url(settings: Settings) -> str:
    return join_url(settings.api_base_url, settings.api_health_path)


async def wait_healthy(
    settings: Settings, engine: ContainerEngine | None, containers: list[ContainerState],
) -> str:
    """Poll until every container runs and is healthy, and say how that was decided.

    A container with a Docker healthcheck must report `healthy`; without one (or with the
    `command` strategy) the health URL must answer 200. A container that stopped fails at once.
    """
    started = time.monotonic()
    deadline = started + settings.health_timeout_seconds
    who = (f"api container {', '.join(c.name for c in containers)}" if containers
           else f"api at {settings.api_base_url}")
    last = "not polled yet"
    async with HttpProbe(timeout_seconds=min(5.0, settings.health_timeout_seconds)) as http:
        while time.monotonic() < deadline:
            states = [await engine.inspect(c.id) for c in containers] if engine else []
            stopped = [s for s in states if s.status in STOPPED]
            if stopped:
                raise StepError(f"{who} not healthy after {time.monotonic() - started:.1f} s: "
                                + "; ".join(s.describe() for s in stopped))
            waiting = [s for s in states if s.status != "running" or
                       (s.health is not None and s.health != "healthy")]
            if waiting:
                last = "; ".join(s.describe() for s in waiting)
            elif states and all(s.health == "healthy" for s in states):
                return "Docker healthcheck reports healthy"
            else:
                answer = await http.get(health_url(settings))
                if answer.status == 200:
                    return f"GET {settings.api_health_path} answered 200"
                last = f"GET {health_url(settings)} {answer.describe()}"
            await asyncio.sleep(POLL_SECONDS)
    raise StepError(f"{who} not healthy after {settings.health_timeout_seconds:g} s: {last}")


async def restore_code(settings: Settings, emit: OutputSink) -> dict[str, Any]:
    command = settings.code_restore_command
    emit(f"$ {command}  (in {settings.code_restore_workdir})")
    result = await run_process(shlex.split(command), emit=emit, cwd=settings.code_restore_workdir,
                               env=settings.code_restore_env)
    if result.returncode != 0:
        raise StepError(f"code restore `{command}` failed (exit {result.returncode}): "
                        + " | ".join(result.tail[-3:]))
    return {"command": command, "exit": result.returncode}


async def emit_recent_logs(engine: ContainerEngine, containers: list[ContainerState],
                           since: datetime, emit: OutputSink) -> None:
    for container in containers:
        lines = await engine.logs_since(container.id, since)
        emit(f"last {min(len(lines), LOG_LINES_ON_FAILURE)} log lines of {container.name}:")
        for line in lines[-LOG_LINES_ON_FAILURE:]:
            emit(f"{container.name}| {line}")


class RestartStep:
    name = StepName.RESTART

    async def plan(self, ctx: StepContext) -> Plan:
        s = ctx.settings
        restore = f"`{s.code_restore_command}` in {s.code_restore_workdir}" \
            if s.code_restore_command else "none configured (the code is restored by hand)"
        details = [f"code restore: {restore}"]
        warnings: list[str] = []
        names: list[str] = []
        if s.restart_strategy is RestartStrategy.COMMAND:
            if not s.restart_command:
                warnings.append("RESTART_STRATEGY=command but RESTART_COMMAND is empty")
            details.append(f"restart: `{s.restart_command}`")
        else:
            async with docker_engine(s) as engine:
                found = await engine.find()
            names = [c.name for c in found]
            if not found:
                warnings.append(f"no container matches {selector(s)[1]}: nothing to restart "
                                "(set API_CONTAINER_NAME or API_COMPOSE_PROJECT/SERVICE)")
            details += [f"restart {c.name} ({c.short_id}), {c.status}, started {c.started_at}"
                        for c in found]
        details.append(f"then wait up to {s.health_timeout_seconds:g} s for health "
                       f"(Docker healthcheck, else GET {health_url(s)} = 200)")
        return Plan(
            step=self.name,
            summary=f"restore Phase 2 code and restart {', '.join(names) or 'the api'}",
            facts={"code_restore": s.code_restore_command, "strategy": s.restart_strategy.value,
                   "containers": names, "restart_command": s.restart_command},
            details=tuple(details), warnings=tuple(warnings),
        )

    async def check(self, ctx: StepContext) -> CheckResult:
        """Done only when the api itself says it runs Phase 2 code.

        The sandbox reports `"phase": 2` in its health JSON; the real service has no such field,
        and nothing else shows whether this run's restart happened (a container's start time
        says nothing about which code it loaded). Restarting twice is harmless, so an uncertain
        check errs on re-running the step.
        """
        answer = await get_once(health_url(ctx.settings))
        if answer.status == 200 and isinstance(answer.body, dict) \
                and answer.body.get("phase") == 2:
            return CheckResult(True, "the api reports that it runs Phase 2 code")
        return CheckResult(False, "cannot tell whether the restart happened; re-run it "
                                  "(restarting is safe)")

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        s = ctx.settings
        facts: dict[str, Any] = {"strategy": s.restart_strategy.value}
        if s.code_restore_command:
            facts["code_restore"] = await restore_code(s, emit)
        facts.update(await restart_api(s, emit))
        names = ", ".join(c["name"] for c in facts["containers"])
        if s.restart_strategy is RestartStrategy.COMMAND:
            return Outcome(summary=f"api restarted by command; healthy after "
                                   f"{facts['healthy_after_s']} s", facts=facts)
        return Outcome(summary=f"restarted {names}; healthy after {facts['healthy_after_s']} s",
                       facts=facts)


async def restart_api(s: Settings, emit: OutputSink) -> dict[str, Any]:
    """Restart the api by the configured strategy and wait until it is healthy.

    Step 3 calls it after restoring the code; step 4 again in `KEY_MODEL=service`, once the new
    door key is installed. Returns the facts: when, how long until healthy, which containers.
    """
    if s.restart_strategy is RestartStrategy.COMMAND:
        return await _restart_by_command(s, emit)
    facts: dict[str, Any] = {}
    async with docker_engine(s) as engine:
        found = await engine.find()
        if not found:
            raise StepError(f"no api container matches {selector(s)[1]}")
        restarted_at = datetime.now(UTC)
        facts["restarted_at"] = restarted_at.isoformat()
        clock = time.monotonic()
        for container in found:
            emit(f"restarting {container.name} ({container.short_id}), "
                 f"started {container.started_at}")
            await engine.restart(container.id)
        try:
            emit(await wait_healthy(s, engine, found))
        except StepError:
            await emit_recent_logs(engine, found, restarted_at, emit)
            raise
        facts["healthy_after_s"] = round(time.monotonic() - clock, 3)
        after = {c.id: await engine.inspect(c.id) for c in found}
    facts["containers"] = [
        {"name": c.name, "id": c.short_id, "started_before": c.started_at,
         "started_after": after[c.id].started_at} for c in found
    ]
    return facts


async def _restart_by_command(s: Settings, emit: OutputSink) -> dict[str, Any]:
    """The command must return once the old process is gone: health is polled right after."""
    if not s.restart_command:
        raise StepError("RESTART_STRATEGY=command but RESTART_COMMAND is empty")
    facts: dict[str, Any] = {"restarted_at": datetime.now(UTC).isoformat()}
    clock = time.monotonic()
    emit(f"$ {s.restart_command}")
    result = await run_process(shlex.split(s.restart_command), emit=emit, env=s.restart_env)
    facts["restart_command"] = {"command": s.restart_command, "exit": result.returncode}
    if result.returncode != 0:
        raise StepError(f"restart command failed (exit {result.returncode}): "
                        + " | ".join(result.tail[-3:]))
    emit(await wait_healthy(s, None, []))
    facts["healthy_after_s"] = round(time.monotonic() - clock, 3)
    facts["containers"] = []
    return facts
