"""Stands up a small copy of the service being rolled back, for a rehearsal on any machine.

Two databases (the bot's and the target's) on whatever PostgreSQL can be had, the target migrated
to the Phase 3 head and seeded with clients, a code folder whose checkout chooses Phase 2 or 3,
and the api: a labelled container when a Docker engine answers, else a local process. Returns the
settings that point the six real steps at it; every artefact lands in the rehearsal's folder.

With `KeyModel.SERVICE` it is the real service's model: one door key shared by every client
(all rows under its hash, every contact listed under it), kept as `API_KEY` in the service's
`service/.env`, which the api reads at start (bind-mounted in Docker). When a Redis answers, the
api caches sessions there like the real service, and the cache is warm before the rollback.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bot.rehearsal.api import (
    REPO_ROOT,
    api_environment,
    container_logs,
    reachable_docker_host,
    remove_container,
    start_api_container,
    start_local_api,
    wait_healthy,
)
from bot.rehearsal.cache import cache_settings, reachable_redis, remove_prefix
from bot.rehearsal.postgres import PostgresServer, find_postgres, free_port
from bot.settings import KeyModel, MailerKind, RestartStrategy, Settings

PY = shlex.quote(sys.executable)


@dataclass
class Sandbox:
    settings: Settings
    server: PostgresServer
    databases: list[str]
    folder: Path
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    log_collectors: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def collect_logs(self) -> None:
        for collect in self.log_collectors:
            await collect()

    async def tear_down(self) -> None:
        for cleanup in reversed(self.cleanups):
            await cleanup()
        for name in self.databases:
            await self.server.drop_database(name)
        await asyncio.to_thread(self.server.stop)


async def sandbox_command(args: list[str], env: dict[str, str], log: Path) -> None:
    """`python -m sandbox …` with its output appended to a log file; fails loudly."""
    with log.open("a", encoding="utf-8") as handle:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sandbox", *args, cwd=REPO_ROOT,
            env={**os.environ, **env}, stdout=handle, stderr=asyncio.subprocess.STDOUT)
        code = await proc.wait()
    if code != 0:
        raise RuntimeError(f"`python -m sandbox {' '.join(args)}` failed ({code}); see {log}")


async def stand_up(base: Settings, folder: Path, clients: int, out: TextIO,
                   use_docker: bool | None, key_model: KeyModel = KeyModel.PER_CLIENT,
                   bot_url: str | None = None) -> Sandbox:
    """`bot_url`: a bot database to share (another sandbox's, which owns it); else its own."""
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    configured = base.database_url.get_secret_value() if base.database_url else None
    server = await find_postgres(configured)
    say(f"Sandbox: PostgreSQL ({server.origin}) at {server.admin_url.rsplit('/', 1)[0]}")
    tag = f"rb_rehearsal_{uuid.uuid4().hex[:8]}"
    sandbox = Sandbox(base, server, [], folder)
    try:
        if bot_url is None:
            bot_url = await server.create_database(f"{tag}_bot")
            sandbox.databases.append(f"{tag}_bot")
            from bot.db.migrate import upgrade_to_head

            await upgrade_to_head(bot_url)
        target_url = await server.create_database(f"{tag}_target")
        sandbox.databases.append(f"{tag}_target")
        env_file = folder / "service" / ".env" if key_model is KeyModel.SERVICE else None
        await _prepare_target(target_url, folder, clients, logs / "sandbox.log", env_file)
        say(f"Sandbox: target database seeded with {clients} clients"
            + (f" sharing one door key (API_KEY in {env_file})" if env_file else "")
            + "; code folder ready")
        port = free_port()
        api_env = api_environment(target_url, port, folder / "code")
        overrides: dict[str, object] = {"key_model": key_model}
        if env_file is not None:
            api_env["SANDBOX_ENV_FILE"] = str(env_file)
            overrides["service_env_file"] = env_file
        redis_url = await reachable_redis()
        if redis_url is not None:
            prefix = f"{tag}:"
            api_env |= {"REDIS_URL": redis_url, "SANDBOX_CACHE_PREFIX": prefix}
            overrides |= cache_settings(redis_url, prefix)

            async def forget_cache() -> None:
                await remove_prefix(redis_url, prefix)

            sandbox.cleanups.append(forget_cache)
        overrides |= await _start_api(sandbox, api_env, tag, use_docker, say,
                                      (env_file,) if env_file else ())
        if redis_url is not None:
            await sandbox_command(["warm-cache", "--database-url", target_url, "--redis-url",
                                   redis_url, "--prefix", f"{tag}:"], {}, logs / "sandbox.log")
            say(f"Sandbox: the api caches sessions in Redis at {redis_url} (keys {tag}:session:"
                "…), warm with every session")
        else:
            say("Sandbox: no Redis answered: the api runs without its session cache")
    except BaseException:
        await sandbox.tear_down()
        raise
    sandbox.settings = base.model_copy(update={
        "database_url": _secret(bot_url),
        "target_database_url": _secret(target_url),
        "backup_dir": folder / "backups",
        "mailer": MailerKind.OUTBOX,
        "outbox_dir": folder / "outbox",
        "client_directory": folder / "clients.csv",
        "client_directory_query": "",
        # The service's own way: `alembic downgrade` in its checkout, DATABASE_URL in the env.
        "downgrade_command": f"{Path(sys.prefix) / 'bin' / 'alembic'} downgrade "
                             f"{base.phase2_revision}",
        "downgrade_workdir": REPO_ROOT / "sandbox",
        "downgrade_env": {},
        "code_restore_command": "git checkout --quiet phase-2",
        "code_restore_workdir": folder / "code",
        "api_base_url": f"http://127.0.0.1:{port}",
        "api_health_path": "/health",
        "health_timeout_seconds": 60.0,
        "step_timeout_seconds": 300.0,
        "allow_self_approval": False,
        "slack_bot_token": None,
        **overrides,
    })
    await wait_healthy(sandbox.settings.api_base_url)
    say(f"Sandbox: api healthy at {sandbox.settings.api_base_url}")
    return sandbox


def _secret(value: str) -> object:
    from pydantic import SecretStr

    return SecretStr(value)


async def _prepare_target(target_url: str, folder: Path, clients: int, log: Path,
                          env_file: Path | None) -> None:
    env: dict[str, str] = {}
    shared = ["--shared-key-env-file", str(env_file)] if env_file is not None else []
    await sandbox_command(["migrate", "--database-url", target_url], env, log)
    await sandbox_command(["seed", "--database-url", target_url, "--clients", str(clients),
                           "--without-contact", "1", *shared,
                           # the Phase 3 keys, lost by the rollback: kept (0600) so that one
                           # can show the old keys refused afterwards
                           "--keys-out", str(folder / "phase3-keys.json"),
                           "--directory-csv", str(folder / "clients.csv")], env, log)
    await sandbox_command(["make-code-dir", str(folder / "code")], env, log)


async def _start_api(sandbox: Sandbox, env: dict[str, str], tag: str, use_docker: bool | None,
                     say: Callable[[str], None], files: tuple[Path, ...]) -> dict[str, object]:
    folder = sandbox.folder
    host = await reachable_docker_host() if use_docker is not False else None
    if host is not None:
        os.environ["DOCKER_HOST"] = host  # the restart and verify steps talk to this engine
        project = tag.replace("_", "-")
        container_id = await start_api_container(host, project, env, folder / "code",
                                                 files=files)

        async def remove() -> None:
            await remove_container(host, container_id)

        async def save_logs() -> None:
            text = await container_logs(host, container_id)
            await asyncio.to_thread((folder / "logs" / "api.log").write_text, text, "utf-8")

        sandbox.cleanups.append(remove)
        sandbox.log_collectors.append(save_logs)
        say(f"Sandbox: api in Docker container {project}-api-1 ({host})")
        return {"restart_strategy": RestartStrategy.DOCKER, "api_compose_project": project,
                "api_compose_service": "api", "api_container_name": ""}
    api = await start_local_api(folder, env, folder / "logs" / "api.log")

    async def stop() -> None:
        api.stop()

    sandbox.cleanups.append(stop)
    say(f"Sandbox: api as a local process, restarted by {api.script}")
    return {"restart_strategy": RestartStrategy.COMMAND, "restart_command": api.restart_command}
