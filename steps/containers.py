"""The api containers, seen through a narrow interface over aiodocker."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import aiodocker
import aiohttp

from bot.settings import Settings
from steps.protocol import StepError

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


@dataclass(frozen=True)
class ContainerState:
    id: str
    name: str
    status: str  # running, exited, restarting, ...
    started_at: str
    health: str | None  # healthy / unhealthy / starting, or None without a healthcheck

    @property
    def short_id(self) -> str:
        return self.id[:12]


class ContainerEngine(Protocol):
    async def find(self) -> list[ContainerState]: ...

    async def inspect(self, container_id: str) -> ContainerState: ...

    async def restart(self, container_id: str) -> None: ...

    async def logs_since(self, container_id: str, since: datetime) -> list[str]: ...


def selector(settings: Settings) -> tuple[dict[str, list[str]], str]:
    """Docker filters for the api containers, and the same in words for error messages."""
    if settings.api_container_name:
        name = settings.api_container_name
        return {"name": [f"^/{name}$"]}, f"container name {name!r}"
    labels = [f"{SERVICE_LABEL}={settings.api_compose_service}"]
    if settings.api_compose_project:
        labels.append(f"{PROJECT_LABEL}={settings.api_compose_project}")
    return {"label": labels}, "labels " + ", ".join(labels)


def _state(info: dict[str, Any]) -> ContainerState:
    state = info.get("State", {})
    health = state.get("Health")
    return ContainerState(
        id=info["Id"], name=info.get("Name", "").lstrip("/"), status=state.get("Status", "?"),
        started_at=state.get("StartedAt", ""),
        health=health.get("Status") if isinstance(health, dict) else None,
    )


class DockerEngine:
    def __init__(self, docker: aiodocker.Docker, settings: Settings) -> None:
        self.docker = docker
        self.settings = settings

    async def find(self) -> list[ContainerState]:
        filters, _ = selector(self.settings)
        found = await self.docker.containers.list(all=True, filters=json.dumps(filters))
        return [await self.inspect(c.id) for c in found]

    async def inspect(self, container_id: str) -> ContainerState:
        container = await self.docker.containers.get(container_id)
        return _state(dict(container._container))

    async def restart(self, container_id: str) -> None:
        container = await self.docker.containers.get(container_id)
        await container.restart(timeout=10)

    async def logs_since(self, container_id: str, since: datetime) -> list[str]:
        container = await self.docker.containers.get(container_id)
        chunks = await container.log(stdout=True, stderr=True, since=int(since.timestamp()))
        return "".join(chunks).splitlines()


@asynccontextmanager
async def docker_engine(settings: Settings) -> AsyncIterator[DockerEngine]:
    try:
        docker = aiodocker.Docker()
    except (ValueError, OSError) as exc:
        raise StepError(f"cannot reach the Docker engine: {exc}") from None
    try:
        try:
            await docker.version()
        except (aiohttp.ClientError, OSError, aiodocker.DockerError) as exc:
            raise StepError(
                f"cannot reach the Docker engine at {docker.docker_host}: {exc}"
            ) from None
        yield DockerEngine(docker, settings)
    finally:
        await docker.close()
