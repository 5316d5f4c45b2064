"""The `command` restart strategy of the rehearsal: a script that stops the api and starts it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from bot.rehearsal.api import start_local_api, wait_healthy
from bot.rehearsal.postgres import free_port


async def _pid(base_url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(base_url + "/health") as answer:
        return int((await answer.json())["pid"])


async def test_restart_script_replaces_the_running_process(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = await start_local_api(tmp_path, {"PORT": str(port)}, tmp_path / "api.log",
                                module="tests.terminal.health_app")
    try:
        await wait_healthy(base, within=30)
        first = await _pid(base)
        assert int(api.pidfile.read_text()) == first
        proc = await asyncio.create_subprocess_shell(
            api.restart_command, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert proc.returncode == 0 and b"restarted" in out
        await wait_healthy(base, within=30)
        second = await _pid(base)
        assert second != first and int(api.pidfile.read_text()) == second
    finally:
        api.stop()


async def test_api_container_is_labelled_like_a_compose_service(
    docker_host: str, tmp_path: Path
) -> None:
    from bot.preflight import check_restart
    from bot.rehearsal.api import container_logs, remove_container, start_api_container
    from bot.settings import Settings

    port = free_port()
    project = f"rbapi{port}"
    container_id = await start_api_container(
        docker_host, project, {"PORT": str(port), "PYTHONUNBUFFERED": "1"}, tmp_path,
        module="tests.terminal.health_app")
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", within=60)
        line = await check_restart(Settings(_env_file=None,  # type: ignore[call-arg]
                                            api_compose_project=project))
        assert line.ok and f"{project}-api-1" in line.detail
        assert isinstance(await container_logs(docker_host, container_id), str)
    finally:
        await remove_container(docker_host, container_id)
