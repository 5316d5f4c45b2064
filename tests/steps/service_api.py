"""The sandbox api as a real local process the way a deployment without Docker runs it, with the
real service's door key (read from its env file at start) and its Redis session cache."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bot.rehearsal.api import LocalApi, start_local_api, wait_healthy
from bot.rehearsal.postgres import free_port


@dataclass(frozen=True)
class ServiceApi:
    base_url: str
    process: LocalApi

    @property
    def restart_command(self) -> str:
        return self.process.restart_command


@asynccontextmanager
async def local_service_api(folder: Path, database_url: str, *, phase: int = 2,
                            env_file: Path | None = None, redis_url: str | None = None,
                            cache_prefix: str = "") -> AsyncIterator[ServiceApi]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {"DATABASE_URL": database_url, "PORT": str(port), "SANDBOX_PHASE": str(phase),
           "PYTHONUNBUFFERED": "1"}
    if env_file is not None:
        env["SANDBOX_ENV_FILE"] = str(env_file)
    if redis_url:
        env |= {"REDIS_URL": redis_url, "SANDBOX_CACHE_PREFIX": cache_prefix}
    process = await start_local_api(folder, env, folder / "api.log")
    api = ServiceApi(f"http://127.0.0.1:{port}", process)
    try:
        await wait_healthy(api.base_url, 30)
        yield api
    finally:
        process.stop()


async def get(base_url: str, path: str, key: str | None) -> tuple[int, dict[str, object]]:
    headers = {"X-API-Key": key} if key is not None else {}
    async with aiohttp.ClientSession() as http, http.get(base_url + path,
                                                         headers=headers) as answer:
        return answer.status, await answer.json(content_type=None)
