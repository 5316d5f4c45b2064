"""The shipped image, built once per session by the same script CI and a developer use.

`scripts/build-image.sh` makes the Debian base with debootstrap when it is absent (no registry
answers here) and reuses every cached layer, so a second build is a matter of seconds.
Containers run on the host's network (dockerd runs with --bridge=none): the test PostgreSQL,
the fake Slack and the bot's own port are all on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from tests.slackwire.serve import serve_on_free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("RB_TEST_IMAGE", "rollback-bot:test")
BUILD_WITHIN = 20 * 60.0


@dataclass(frozen=True)
class Completed:
    code: int
    output: str


async def run(*argv: str, within: float = 120.0, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> Completed:
    """A command's exit code and its output (stdout and stderr together), without blocking the
    event loop: the fake Slack a container talks to is served by this same loop."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(f"{argv[:3]} still running after {within} s:\n"
                             f"{out.decode(errors='replace')[-4000:]}") from None
    return Completed(proc.returncode or 0, out.decode(errors="replace"))


async def docker(*args: str, within: float = 120.0) -> Completed:
    return await run("docker", *args, within=within)


async def poll(condition: Callable[[], Awaitable[object]], within: float, what: str) -> object:
    deadline = time.monotonic() + within
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.2)


@pytest.fixture(scope="session")
async def bot_image(docker_host: str) -> str:
    started = time.monotonic()
    built = await run("bash", str(REPO_ROOT / "scripts" / "build-image.sh"), IMAGE,
                      within=BUILD_WITHIN, cwd=REPO_ROOT)
    if built.code != 0:
        reason = f"scripts/build-image.sh failed ({built.code}):\n{built.output[-3000:]}"
        base_missing = (await docker("image", "inspect", "debian:trixie-slim")).code != 0
        if base_missing and os.geteuid() != 0 and os.environ.get("CI") != "true":
            pytest.skip("no debian:trixie-slim image and no root to debootstrap one")
        pytest.fail(reason)
    print(f"image {IMAGE} built in {time.monotonic() - started:.0f} s")
    return IMAGE


@dataclass
class Container:
    name: str

    async def logs(self) -> str:
        return (await docker("logs", self.name)).output

    async def health(self) -> str:
        state = await docker("inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}",
                             self.name)
        return state.output.strip()


async def healthy(container: Container) -> bool:
    state = await container.health()
    if state.startswith("exited"):
        raise AssertionError(f"the bot exited:\n{(await container.logs())[-4000:]}")
    return state == "running healthy"



@contextlib.asynccontextmanager
async def detached(image: str, *args: str, options: tuple[str, ...] = ()
                   ) -> AsyncIterator[Container]:
    """`docker run -d` on the host network; removed (with its anonymous volumes) afterwards."""
    name = f"rbt-{uuid.uuid4().hex[:10]}"
    started = await docker("run", "-d", "--name", name, "--network", "host", *options, image,
                           *args)
    assert started.code == 0, started.output
    try:
        yield Container(name)
    finally:
        await docker("rm", "-f", "-v", name)


def env_options(**values: str) -> tuple[str, ...]:
    return tuple(option for name, value in values.items() for option in ("-e", f"{name}={value}"))


@pytest.fixture
async def api_health() -> AsyncIterator[str]:
    """Something answering GET /health for the preflight's api line (the api itself is the
    sandbox's business; here only the bot is under test)."""
    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/health", health)
    runner, port = await serve_on_free_port(app)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
