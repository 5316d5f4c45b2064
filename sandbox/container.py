"""Run the sandbox API in a Docker container labelled like a compose service `api`."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiodocker
import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[1]


async def run_api_container(
    docker: aiodocker.Docker, *, image: str, binds: list[str], database_url: str, port: int,
    code_dir: Path, project: str, service: str = "api", name: str | None = None,
    healthcheck: bool = False, env_file: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> str:
    """Start the container (host network) and return its id.

    Labelled like compose service `service` of `project`, so the restart step finds it the way it
    finds the real service; the code dir is bound read-only at its own path (the api reads PHASE).
    `env_file` (the door key's dotenv) is bind-mounted at its own path, as a deployment mounts
    the service's `.env`: the container reads the file the host has when it (re)starts.
    """
    file_binds = [f"{env_file}:{env_file}:ro"] if env_file is not None else []
    file_env = [f"SANDBOX_ENV_FILE={env_file}"] if env_file is not None else []
    config: dict[str, object] = {
        "Image": image,
        "Cmd": [sys.executable, "-m", "sandbox.api"],
        "WorkingDir": str(REPO_ROOT),
        "Env": [f"DATABASE_URL={database_url}", f"PORT={port}", f"SANDBOX_CODE_DIR={code_dir}",
                "PYTHONUNBUFFERED=1", *file_env,
                *(f"{k}={v}" for k, v in (extra_env or {}).items())],
        "Labels": {"com.docker.compose.project": project,
                   "com.docker.compose.service": service,
                   "com.docker.compose.container-number": "1",
                   "com.docker.compose.oneoff": "False"},
        "HostConfig": {"NetworkMode": "host", "Binds": [*binds, f"{code_dir}:{code_dir}:ro",
                                                         *file_binds],
                       "RestartPolicy": {"Name": "no"}},
    }
    if healthcheck:
        probe = (f"import urllib.request; urllib.request.urlopen("
                 f"'http://127.0.0.1:{port}/health', timeout=2)")
        config["Healthcheck"] = {"Test": ["CMD", sys.executable, "-c", probe],
                                 "Interval": 500_000_000, "Timeout": 2_000_000_000,
                                 "Retries": 3, "StartPeriod": 0}
    container = await docker.containers.create_or_replace(
        name=name or f"{project}-{service}-1", config=config)
    await container.start()
    return str(container.id)


async def wait_healthy(base_url: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109 (contract)
    """Poll `/health` until it answers 200, or raise TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(base_url.rstrip("/") + "/health") as answer:
                    if answer.status == 200:
                        return
                    last = f"HTTP {answer.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = str(exc) or type(exc).__name__
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{base_url} not healthy after {timeout} s: {last}")
