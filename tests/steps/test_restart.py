"""Step 3 against real containers: the sandbox api, and small stand-ins that misbehave."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiodocker
import aiohttp
import pytest

from bot.domain.step_protocol import StepError
from bot.rehearsal.postgres import free_port
from bot.settings import Settings
from sandbox.container import run_api_container, wait_healthy
from steps.containers import docker_time
from steps.restart import RestartStep
from tests.fixtures.docker import host_binds
from tests.fixtures.sandbox import SandboxApi
from tests.steps.sandbox_settings import sandbox_settings
from tests.steps.step_context import step_context

pytestmark = pytest.mark.docker


def api_settings(api: SandboxApi, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "api_base_url": api.base_url, "api_compose_project": api.project,
        "code_restore_command": "git checkout -q phase-2", "code_restore_workdir": api.code_dir,
        **overrides}
    return sandbox_settings(api.database_url, tmp_path, **values)


async def started_at(docker: aiodocker.Docker, container_id: str) -> datetime:
    stamp = docker_time((await docker.containers.get(container_id))["State"]["StartedAt"])
    assert stamp is not None
    return stamp


async def health(base_url: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/health") as answer:
        assert answer.status == 200
        body: dict[str, object] = await answer.json()
        return body


async def test_restart_restores_phase2_code_and_waits_for_health(
    sandbox_api: SandboxApi, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    settings = api_settings(sandbox_api, tmp_path)
    step = RestartStep()
    name = f"{sandbox_api.project}-api-1"
    plan = await step.plan(step_context(settings))
    assert plan.facts["containers"] == [name] and not plan.warnings
    assert any(name in d and sandbox_api.container_id[:12] in d for d in plan.details)
    check = await step.check(step_context(settings))
    assert not check.done and "restarting is safe" in check.reason
    before = await started_at(docker, sandbox_api.container_id)

    lines: list[str] = []
    outcome = await step.run(step_context(settings), lines.append)

    after = await started_at(docker, sandbox_api.container_id)
    assert after > before
    assert (await health(sandbox_api.base_url))["phase"] == 2, "the api runs Phase 2 code"
    (entry,) = outcome.facts["containers"]
    assert entry["name"] == name and entry["id"] == sandbox_api.container_id[:12]
    assert docker_time(entry["started_after"]) == after
    assert docker_time(entry["started_before"]) == before
    assert before < datetime.fromisoformat(outcome.facts["restarted_at"]) < after
    assert outcome.facts["code_restore"] == {"command": "git checkout -q phase-2", "exit": 0}
    assert (sandbox_api.code_dir / "PHASE").read_text().strip() == "2"
    assert f"restarting {name}" in "\n".join(lines)
    assert any("answered 200" in line for line in lines)
    assert (await step.check(step_context(settings))).done


async def test_failed_code_restore_stops_before_any_restart(
    sandbox_api: SandboxApi, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    settings = api_settings(sandbox_api, tmp_path,
                            code_restore_command="git checkout -q no-such-tag")
    before = await started_at(docker, sandbox_api.container_id)
    with pytest.raises(StepError, match=r"code restore `git checkout -q no-such-tag` failed "
                                        r"\(exit 1\): .*no-such-tag"):
        await RestartStep().run(step_context(settings), lambda _line: None)
    assert await started_at(docker, sandbox_api.container_id) == before
    assert (await health(sandbox_api.base_url))["phase"] == 3


async def test_no_matching_container_names_what_was_searched(
    sandbox_api: SandboxApi, tmp_path: Path
) -> None:
    settings = api_settings(sandbox_api, tmp_path, api_compose_project="nobody-here")
    plan = await RestartStep().plan(step_context(settings))
    assert plan.facts["containers"] == []
    assert ("no container matches labels com.docker.compose.service=api, "
            "com.docker.compose.project=nobody-here") in plan.warnings[0]
    with pytest.raises(StepError, match=r"no api container matches labels "
                                        r"com\.docker\.compose\.service=api, "
                                        r"com\.docker\.compose\.project=nobody-here"):
        await RestartStep().run(step_context(settings), lambda _line: None)

    by_name = api_settings(sandbox_api, tmp_path, api_container_name="no-such-api")
    plan = await RestartStep().plan(step_context(by_name))
    assert "container name 'no-such-api'" in plan.warnings[0]


async def test_container_found_by_name(sandbox_api: SandboxApi, tmp_path: Path) -> None:
    name = f"{sandbox_api.project}-api-1"
    settings = api_settings(sandbox_api, tmp_path, api_container_name=name,
                            api_compose_project="ignored-when-a-name-is-set")
    plan = await RestartStep().plan(step_context(settings))
    assert plan.facts["containers"] == [name]


async def test_health_path_that_never_answers_200_fails_with_the_last_state_and_logs(
    sandbox_api: SandboxApi, tmp_path: Path
) -> None:
    settings = api_settings(sandbox_api, tmp_path, api_health_path="/no-such-health",
                            # long enough for the api to start on a loaded machine and answer
                            # 404 (the state the error must name), not just "refused"
                            health_timeout_seconds=8, code_restore_command="")
    lines: list[str] = []
    name = f"{sandbox_api.project}-api-1"
    with pytest.raises(StepError, match=rf"api container {name} not healthy after 8 s: "
                                        r"GET .*/no-such-health answered 404"):
        await RestartStep().run(step_context(settings), lines.append)
    assert any(line.startswith(f"{name}| ") and '"event": "startup"' in line for line in lines)


@dataclass(frozen=True)
class StandIn:
    project: str
    base_url: str
    container_id: str


@pytest.fixture
async def dies_on_restart(
    docker: aiodocker.Docker, host_image: str, tmp_path: Path
) -> AsyncIterator[StandIn]:
    """`python -m http.server` the first time; on every later start it exits with code 3."""
    flags = tmp_path / "flags"
    flags.mkdir()
    port, project = free_port(), f"rbt{uuid.uuid4().hex[:8]}"
    script = (f"test -e {flags}/started && echo 'config broken' && exit 3; touch {flags}/started;"
              f" exec {sys.executable} -m http.server {port} --bind 127.0.0.1")
    container = await docker.containers.create_or_replace(name=f"{project}-api-1", config={
        "Image": host_image, "Cmd": ["/bin/sh", "-c", script],
        "StopTimeout": 1,  # as PID 1, http.server ignores SIGTERM
        "Labels": {"com.docker.compose.project": project, "com.docker.compose.service": "api"},
        "HostConfig": {"NetworkMode": "host", "Binds": [*host_binds(), f"{flags}:{flags}"]}})
    await container.start()
    try:
        yield StandIn(project, f"http://127.0.0.1:{port}", container.id)
    finally:
        with contextlib.suppress(aiodocker.DockerError):
            await container.delete(force=True)


async def test_container_that_exits_after_restart_fails_at_once_with_its_state(
    dies_on_restart: StandIn, target_db_url: str, tmp_path: Path
) -> None:
    settings = sandbox_settings(target_db_url, tmp_path, api_base_url=dies_on_restart.base_url,
                                api_compose_project=dies_on_restart.project,
                                api_health_path="/", health_timeout_seconds=60)
    lines: list[str] = []
    name = f"{dies_on_restart.project}-api-1"
    with pytest.raises(StepError, match=rf"api container {name} not healthy after [\d.]+ s: "
                                        rf"{name} is exited \(exit code 3\)") as failure:
        await RestartStep().run(step_context(settings), lines.append)
    assert float(str(failure.value).split("after ")[1].split(" s")[0]) < 30, "no wait for 60 s"
    assert f"{name}| config broken" in lines


async def test_docker_healthcheck_is_what_restart_waits_for(
    docker: aiodocker.Docker, host_image: str, target_db_url: str, sandbox_code_dir: Path,
    tmp_path: Path,
) -> None:
    port, project = free_port(), f"rbt{uuid.uuid4().hex[:8]}"
    container_id = await run_api_container(
        docker, image=host_image, binds=host_binds(), database_url=target_db_url, port=port,
        code_dir=sandbox_code_dir, project=project, healthcheck=True)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", 30)  # a restart mid-startup waits 10 s
        settings = sandbox_settings(
            target_db_url, tmp_path, api_base_url=f"http://127.0.0.1:{port}",
            api_compose_project=project, api_health_path="/not-used-with-a-healthcheck",
            code_restore_command="git checkout -q phase-2", code_restore_workdir=sandbox_code_dir)
        lines: list[str] = []
        outcome = await RestartStep().run(step_context(settings), lines.append)
        assert "Docker healthcheck reports healthy" in lines
        assert (await docker.containers.get(container_id))["State"]["Health"]["Status"] \
            == "healthy"
        assert (await health(f"http://127.0.0.1:{port}"))["phase"] == 2
        assert outcome.facts["containers"][0]["name"] == f"{project}-api-1"
    finally:
        with contextlib.suppress(aiodocker.DockerError):
            await (await docker.containers.get(container_id)).delete(force=True)


async def test_restart_strategy_command_runs_the_command_then_waits_for_health(
    sandbox_api: SandboxApi, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    command = (f"docker -H {shlex.quote(os.environ['DOCKER_HOST'])} restart "
               f"{sandbox_api.container_id[:12]}")
    settings = api_settings(sandbox_api, tmp_path, restart_strategy="command",
                            restart_command=command)
    plan = await RestartStep().plan(step_context(settings))
    assert plan.facts["containers"] == [] and f"restart: `{command}`" in plan.details
    before = await started_at(docker, sandbox_api.container_id)
    lines: list[str] = []
    outcome = await RestartStep().run(step_context(settings), lines.append)
    assert await started_at(docker, sandbox_api.container_id) > before
    assert (await health(sandbox_api.base_url))["phase"] == 2
    assert outcome.facts["restart_command"] == {"command": command, "exit": 0}
    assert outcome.summary.startswith("api restarted by command; healthy after")
    assert f"$ {command}" in lines


async def test_restart_command_that_fails_is_reported_with_its_output(
    sandbox_api: SandboxApi, tmp_path: Path
) -> None:
    settings = api_settings(sandbox_api, tmp_path, restart_strategy="command",
                            code_restore_command="",
                            restart_command="sh -c 'echo unit api.service not found; exit 5'")
    with pytest.raises(StepError, match=r"restart command failed \(exit 5\): "
                                        r"unit api.service not found"):
        await RestartStep().run(step_context(settings), lambda _line: None)


async def test_unreachable_docker_engine_is_named(
    target_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    settings = sandbox_settings(target_db_url, tmp_path, code_restore_command="")
    with pytest.raises(StepError, match=rf"cannot reach the Docker engine at "
                                        rf"unix://{tmp_path}/no-docker.sock"):
        await RestartStep().run(step_context(settings), lambda _line: None)
    with pytest.raises(StepError, match="cannot reach the Docker engine"):
        await RestartStep().plan(step_context(settings))
