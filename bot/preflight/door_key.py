"""`rollback-bot check` lines for the real service's door key and its Redis caches.

With `KEY_MODEL=service` every missing piece gets its own line in the one run: the installer
(file there and writable with its owner kept, or the command found), the door key the service
holds now against the hashes on the rows (is it the key the rows belong to? does the container's
own environment set it, beating the `.env`?), and which old hash to keep when there are several.
The Redis line is there in both models: an unreachable cache would stop step 4 halfway.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import shutil

import asyncpg

from bot.preflight.lines import TIMEOUT, CheckLine
from bot.preflight.lines import short as _short
from bot.settings import KeyInstaller, KeyModel, RestartStrategy, Settings
from bot.urls import libpq_url, password_of
from steps.cache_invalidation import connect_redis, redis_where
from steps.key_installers import env_file_problem, env_file_value

OWNER_HASHES_SQL = (
    "SELECT owner_api_key_hash AS h FROM sessions WHERE owner_api_key_hash IS NOT NULL "
    "UNION SELECT owner_api_key_hash FROM assistants WHERE owner_api_key_hash IS NOT NULL")


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def check_installer(s: Settings) -> CheckLine:
    name = "door key installer"
    if s.key_installer is KeyInstaller.COMMAND:
        words = shlex.split(s.key_install_command) if s.key_install_command else []
        if not words:
            return CheckLine(name, False, "KEY_INSTALLER=command but KEY_INSTALL_COMMAND is "
                             "empty", "set KEY_INSTALL_COMMAND (it receives the key on stdin)")
        if shutil.which(words[0]) is None:
            return CheckLine(name, False, f"key install command {words[0]!r} not found",
                             "fix KEY_INSTALL_COMMAND's program path")
        return CheckLine(name, True, f"command {words[0]} (the key on its stdin)")
    path = s.service_env_file
    if path is None:
        return CheckLine(name, False, "KEY_INSTALLER=env-file but SERVICE_ENV_FILE is not set",
                         "set SERVICE_ENV_FILE to the service's .env (in its working "
                         "directory, e.g. /srv/claude-agent-api/.env)")
    problem = env_file_problem(path)
    if problem is not None:
        return CheckLine(name, False, problem, "correct SERVICE_ENV_FILE or its folder's mode")
    real = path
    info = real.stat()
    if not os.access(real, os.R_OK) or not os.access(real.parent, os.W_OK):
        return CheckLine(name, False, f"{path} is not readable, or its folder {real.parent} "
                         "not writable (the new file is written beside it, then renamed)",
                         "run the bot as the file's owner or root, or KEY_INSTALLER=command")
    if os.geteuid() != 0 and (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
        return CheckLine(name, False, f"{path} belongs to {info.st_uid}:{info.st_gid}; this "
                         "user cannot give the rewritten file that owner",
                         "run the bot as that user or root, or KEY_INSTALLER=command")
    text = real.read_text(encoding="utf-8", errors="replace")
    how = "rewritten" if env_file_value(text, s.service_env_variable) is not None else \
        "appended (the file has none now)"
    return CheckLine(name, True, f"{path} writable, mode {info.st_mode & 0o777:04o}, owner "
                     f"{info.st_uid}:{info.st_gid}; its {s.service_env_variable}= line will be "
                     f"{how}")


async def _row_hashes(s: Settings) -> set[str] | None:
    url = s.target_database_url.get_secret_value()
    try:
        conn = await asyncpg.connect(libpq_url(url), password=password_of(url), timeout=TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return None
    try:
        return {r["h"] for r in await conn.fetch(OWNER_HASHES_SQL)}
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()


async def _container_keys(s: Settings) -> dict[str, str] | None:
    """Container name -> the door key its own environment sets (None: not Docker)."""
    if s.restart_strategy is not RestartStrategy.DOCKER:
        return None
    import aiodocker

    from steps.containers import selector

    filters, _ = selector(s)
    try:
        async with aiodocker.Docker() as docker:
            found = await asyncio.wait_for(
                docker.containers.list(all=True, filters=json.dumps(filters)), TIMEOUT)
            keys: dict[str, str] = {}
            for container in found:
                info = await container.show()
                for item in info.get("Config", {}).get("Env") or []:
                    name, _, value = str(item).partition("=")
                    if name == s.service_env_variable:
                        keys[str(info.get("Name", "")).lstrip("/")] = value
            return keys
    except (aiodocker.DockerError, OSError, TimeoutError, ValueError):
        return None  # the docker line says why


async def check_door_key(s: Settings) -> list[CheckLine]:
    """The key the service holds now, against the rows' hashes and the installer's reach."""
    name, lines = "door key", []
    hashes = await _row_hashes(s)
    in_file = None
    if s.key_installer is KeyInstaller.ENV_FILE and s.service_env_file is not None:
        try:
            in_file = env_file_value(s.service_env_file.read_text(encoding="utf-8"),
                                     s.service_env_variable)
        except OSError:
            in_file = None
    for container, value in (await _container_keys(s) or {}).items():
        if s.key_installer is KeyInstaller.ENV_FILE:
            lines.append(CheckLine(
                name, False, f"container {container} sets {s.service_env_variable} in its own "
                "environment, which beats the .env file: the installed key would never be read",
                "recreate the container without it (env_file/.env bind mount instead), or "
                "KEY_INSTALLER=command with a command that recreates it"))
        in_file = in_file or value
    if hashes is None:
        lines.append(CheckLine(name, True, "target not readable: the service's key is not "
                               "matched against the rows", blocking=False))
        return lines
    described = ", ".join(sorted(h[:8] for h in hashes)) or "none"
    chosen = s.service_key_old_hash.strip().lower()
    current = _sha(in_file) if in_file else None
    if current is not None and current not in hashes:
        lines.append(CheckLine(name, False, f"the service's {s.service_env_variable} hashes to "
                               f"{current[:8]}, which owns no row (rows: {described})",
                               "the rows' hashes come from another key: check which key the "
                               "service really runs with", blocking=False))
    if len(hashes) > 1 and not chosen:
        hint = f" (the service's current key is {current[:8]})" if current in hashes else ""
        lines.append(CheckLine(name, False, f"the rows carry {len(hashes)} old hashes "
                               f"({described}) and KEY_MODEL=service installs one{hint}",
                               "set SERVICE_KEY_OLD_HASH to the hash of the service's "
                               "current API_KEY"))
    elif chosen and not [h for h in hashes if h.startswith(chosen)]:
        lines.append(CheckLine(name, False, f"SERVICE_KEY_OLD_HASH {chosen[:16]} matches none "
                               f"of the rows' hashes ({described})", "correct it"))
    if not lines:
        which = f"{current[:8]}, the hash the rows carry" if current else described
        lines.append(CheckLine(name, True, f"one door key to replace: {which}"))
    return lines


async def check_redis(s: Settings) -> CheckLine:
    if s.redis_url is None:
        return CheckLine("redis cache", False, "REDIS_URL is empty: step 4 will not clear the "
                         "service's session cache (entries holding old hashes refuse the new "
                         "keys for up to REDIS_SESSION_TTL, an hour by default)",
                         "set REDIS_URL to the service's Redis (its own REDIS_URL setting)",
                         blocking=False)
    try:
        async with connect_redis(s) as client:
            found = 0
            async for _ in client.scan_iter(match=s.cache_owner_key.replace("{hash}", "*"),
                                            count=s.cache_batch):
                found += 1
                if found >= 10_000:
                    break
    except Exception as exc:
        return CheckLine("redis cache", False, _short(exc),
                         "start Redis or correct REDIS_URL (or empty it to skip the cache)")
    return CheckLine("redis cache", True, f"{redis_where(s)} answers; {found:,} owner indexes "
                     f"match {s.cache_owner_key} now")


async def service_lines(s: Settings) -> list[CheckLine]:
    """Every line of the door key model and the cache, in the order step 4 meets them."""
    lines: list[CheckLine] = []
    if s.key_model is KeyModel.SERVICE:
        lines.append(await asyncio.to_thread(check_installer, s))
        lines += await check_door_key(s)
    lines.append(await check_redis(s))
    return lines

