"""The api containers, seen through a narrow interface over aiodocker.

Containers are selected the way the operator configured them: by name (API_CONTAINER_NAME), else
by compose labels (service, and project when set). The engine is the one `DOCKER_HOST` names.
A name matches exactly: Docker's `name` filter is a pattern that also matches `api-old` or
`my-api-2` for `api`, so it only narrows the list and the name is compared here.
`find_api_containers` is the one selection both step 3 and `rollback-bot check` use.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiodocker
import aiohttp

from bot.domain.step_protocol import StepError
from bot.settings import Settings

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


@dataclass(frozen=True)
class ContainerState:
    id: str
    name: str
    status: str  # running, exited, restarting, ...
    started_at: str  # as Docker reports it (RFC 3339, nanoseconds, UTC)
    health: str | None  # healthy / unhealthy / starting, or None without a healthcheck
    exit_code: int | None = None

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def started(self) -> datetime | None:
        return docker_time(self.started_at)

    def describe(self) -> str:
        if self.status == "running":
            return f"{self.name} running" + (f", health {self.health}" if self.health else "")
        code = f" (exit code {self.exit_code})" if self.exit_code is not None else ""
        return f"{self.name} is {self.status}{code}"


class ContainerEngine(Protocol):
    async def find(self) -> list[ContainerState]: ...

    async def inspect(self, container_id: str) -> ContainerState: ...

    async def restart(self, container_id: str) -> None: ...

    async def logs_since(self, container_id: str, since: datetime) -> list[str]: ...


def docker_time(value: str) -> datetime | None:
    """Docker's `2024-05-01T12:00:00.123456789Z` as an aware UTC datetime (None if never)."""
    if not value or value.startswith("0001-01-01"):
        return None
    stamp, _, fraction = value.rstrip("Z").partition(".")
    fraction = fraction.split("+")[0].split("-")[0][:6]
    parsed = datetime.fromisoformat(stamp + (f".{fraction.ljust(6, '0')}" if fraction else ""))
    return parsed.replace(tzinfo=UTC)


def selector(settings: Settings) -> tuple[dict[str, list[str]], str]:
    """Docker filters for the api containers, and the same in words for messages."""
    if settings.api_container_name:
        name = settings.api_container_name
        return {"name": [name]}, f"container name {name!r}"
    labels = [f"{SERVICE_LABEL}={settings.api_compose_service}"]
    if settings.api_compose_project:
        labels.append(f"{PROJECT_LABEL}={settings.api_compose_project}")
    return {"label": labels}, "labels " + ", ".join(labels)


def selected(settings: Settings, container: ContainerState) -> bool:
    """The exact test `selector`'s filters only approximate (labels are exact already)."""
    return not settings.api_container_name or container.name == settings.api_container_name


def _state(info: dict[str, Any]) -> ContainerState:
    state = info.get("State", {})
    health = state.get("Health")
    status = state.get("Status", "?")
    return ContainerState(
        id=info["Id"], name=info.get("Name", "").lstrip("/"), status=status,
        started_at=state.get("StartedAt", ""),
        health=health.get("Status") if isinstance(health, dict) else None,
        exit_code=state.get("ExitCode") if status != "running" else None,
    )


class DockerEngine:
    def __init__(self, docker: aiodocker.Docker, settings: Settings) -> None:
        self.docker = docker
        self.settings = settings

    async def find(self) -> list[ContainerState]:
        filters, _ = selector(self.settings)
        found = await self.docker.containers.list(all=True, filters=json.dumps(filters))
        states = [await self.inspect(c.id) for c in found]
        return sorted((s for s in states if selected(self.settings, s)), key=lambda s: s.name)

    async def inspect(self, container_id: str) -> ContainerState:
        try:
            return _state(await self.docker.containers.container(container_id).show())
        except aiodocker.DockerError as exc:
            raise StepError(f"cannot inspect container {container_id[:12]}: "
                            f"{exc.message}") from None

    async def restart(self, container_id: str) -> None:
        """Stop (the container's own stop timeout) and start again; returns once started."""
        try:
            await self.docker.containers.container(container_id).restart()
        except aiodocker.DockerError as exc:
            raise StepError(f"Docker could not restart container {container_id[:12]}: "
                            f"{exc.message}") from None

    async def logs_since(self, container_id: str, since: datetime) -> list[str]:
        """stdout and stderr lines written at or after `since` (sub-second precision)."""
        container = self.docker.containers.container(container_id)
        try:
            chunks = await container.log(stdout=True, stderr=True,
                                         since=f"{since.timestamp():.6f}")
        except aiodocker.DockerError as exc:
            raise StepError(f"cannot read the logs of container {container_id[:12]}: "
                            f"{exc.message}") from None
        return "".join(chunks).splitlines()


async def find_api_containers(settings: Settings) -> list[ContainerState]:
    """The api containers as step 3 would restart them (StepError: engine unreachable)."""
    async with docker_engine(settings) as engine:
        return await engine.find()


@asynccontextmanager
async def docker_engine(settings: Settings) -> AsyncIterator[DockerEngine]:
    """The engine `DOCKER_HOST` names; unreachable -> StepError naming where it looked."""
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (the default)"
    try:
        docker = aiodocker.Docker()
    except (ValueError, OSError) as exc:
        raise StepError(f"cannot reach the Docker engine at {where}: {exc}") from None
    try:
        try:
            await docker.version()
        except (aiohttp.ClientError, OSError, aiodocker.DockerError) as exc:
            raise StepError(f"cannot reach the Docker engine at {where}: {exc}") from None
        yield DockerEngine(docker, settings)
    finally:
        await docker.close()
