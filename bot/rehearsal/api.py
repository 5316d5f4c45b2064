"""The sandbox api for the rehearsal: a container on a Docker engine, or a local process.

In a container it carries compose labels, so the restart step finds it as it would find the real
service. Without an engine, it runs as a local process that a small shell script kills and starts
again: the `command` restart strategy real deployments without Docker use too.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shlex
import signal
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[2]
CI_SOCKET = "unix:///tmp/rb-docker.sock"
HOST_IMAGE = "rb-host:latest"


async def reachable_docker_host() -> str | None:
    """The first engine that answers: `DOCKER_HOST`, else the private CI socket."""
    candidates = [os.environ["DOCKER_HOST"]] if os.environ.get("DOCKER_HOST") else []
    candidates.append(CI_SOCKET)
    for host in candidates:
        try:
            async with aiodocker.Docker(url=host) as docker:
                await asyncio.wait_for(docker.version(), 5)
        except (aiodocker.DockerError, OSError, TimeoutError, ValueError):
            continue
        return host
    return None


def api_environment(target_url: str, port: int, code_dir: Path) -> dict[str, str]:
    return {"DATABASE_URL": target_url, "PORT": str(port), "SANDBOX_CODE_DIR": str(code_dir),
            "PYTHONUNBUFFERED": "1"}


async def wait_healthy(base_url: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
        while True:
            try:
                async with http.get(base_url + "/health") as answer:
                    if answer.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sandbox api at {base_url} never became healthy")
            await asyncio.sleep(0.2)


# --- Docker ---------------------------------------------------------------------------------


def _host_binds(extra: list[Path]) -> list[str]:
    paths = {"/usr", "/lib", "/lib64", "/bin", "/etc", sys.base_prefix, sys.prefix,
             str(REPO_ROOT), *(str(p) for p in extra)}
    return [f"{p}:{p}:ro" for p in sorted(paths) if Path(p).exists()]


async def _ensure_host_image(docker: aiodocker.Docker) -> None:
    """An empty image: the container gets the host's userland through read-only binds."""
    try:
        await docker.images.inspect(HOST_IMAGE)
        return
    except aiodocker.DockerError:
        pass
    empty = io.BytesIO()
    with tarfile.open(fileobj=empty, mode="w"):
        pass
    repo, tag = HOST_IMAGE.split(":")
    async with docker._query(  # `docker import`: aiodocker has no wrapper for it
        "images/create", method="POST", params={"fromSrc": "-", "repo": repo, "tag": tag},
        data=empty.getvalue(), headers={"Content-Type": "application/x-tar"},
    ) as answer:
        await answer.read()


async def start_api_container(host: str, project: str, env: dict[str, str],
                              code_dir: Path, module: str = "sandbox.api",
                              files: tuple[Path, ...] = ()) -> str:
    """Run the api labelled as compose service `api` of `project`; returns the container id.

    `files` (the service's env file) are bind-mounted at their own paths, as a deployment
    mounts the service's `.env`."""
    async with aiodocker.Docker(url=host) as docker:
        await _ensure_host_image(docker)
        container = await docker.containers.create_or_replace(
            name=f"{project}-api-1",
            config={
                "Image": HOST_IMAGE,
                "Cmd": [sys.executable, "-m", module],
                "Env": [f"{k}={v}" for k, v in env.items()],
                "WorkingDir": str(REPO_ROOT),
                "Labels": {"com.docker.compose.project": project,
                           "com.docker.compose.service": "api"},
                "HostConfig": {"NetworkMode": "host", "Binds": _host_binds([code_dir, *files])},
            },
        )
        await container.start()
        return str(container.id)


async def container_logs(host: str, container_id: str) -> str:
    async with aiodocker.Docker(url=host) as docker:
        container = await docker.containers.get(container_id)
        lines = await container.log(stdout=True, stderr=True)
        return "".join(lines)


async def remove_container(host: str, container_id: str) -> None:
    async with aiodocker.Docker(url=host) as docker:
        try:
            container = await docker.containers.get(container_id)
            await container.delete(force=True)
        except aiodocker.DockerError:
            pass


# --- local process --------------------------------------------------------------------------

RESTART_SCRIPT = """#!/bin/sh
# Restarts the rehearsal's sandbox api (RESTART_STRATEGY=command): stop the old process, start anew.
PIDFILE={pidfile}
if [ -f "$PIDFILE" ]; then
  OLD=$(cat "$PIDFILE")
  kill "$OLD" 2>/dev/null
  i=0
  while kill -0 "$OLD" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  kill -9 "$OLD" 2>/dev/null
fi
cd {workdir}
{env} nohup {python} -m {module} >> {log} 2>&1 < /dev/null &
echo $! > "$PIDFILE"
echo "sandbox api restarted as process $!"
"""


@dataclass(frozen=True)
class LocalApi:
    script: Path
    pidfile: Path
    log: Path

    @property
    def restart_command(self) -> str:
        return f"sh {shlex.quote(str(self.script))}"

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(self.pidfile.read_text().strip()), signal.SIGTERM)


async def start_local_api(folder: Path, env: dict[str, str], log: Path,
                          module: str = "sandbox.api") -> LocalApi:
    """Write the restart script and run it once to start the api."""
    pidfile, script = folder / "api.pid", folder / "restart-api.sh"
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    script.write_text(RESTART_SCRIPT.format(
        pidfile=shlex.quote(str(pidfile)), workdir=shlex.quote(str(REPO_ROOT)),
        env=assignments, python=shlex.quote(sys.executable), module=module,
        log=shlex.quote(str(log))))
    script.chmod(0o755)
    api = LocalApi(script, pidfile, log)
    proc = await asyncio.create_subprocess_exec("sh", str(script),
                                                stdout=asyncio.subprocess.DEVNULL)
    await proc.wait()
    return api
