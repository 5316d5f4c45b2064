"""`rollback-bot check` for the real service's door key and its caches: every missing piece of
`KEY_MODEL=service` named in one run, the key the service holds against the rows' hashes, a
container environment that beats the `.env`, and Redis."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import aiodocker
import asyncpg
import pytest

from bot.preflight import preflight, stops_rollback
from bot.preflight.door_key import service_lines
from bot.rehearsal.postgres import free_port
from bot.urls import libpq_url
from sandbox.container import run_api_container, wait_healthy
from sandbox.seed import write_env_file
from tests.fixtures.docker import host_binds
from tests.fixtures.sandbox import SandboxSeed
from tests.steps.step_context import settings_for


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def by_name(lines: list) -> dict[str, list[str]]:  # type: ignore[type-arg]
    found: dict[str, list[str]] = {}
    for line in lines:
        found.setdefault(line.name, []).append(line.text())
    return found


async def test_check_names_every_missing_piece_of_service_mode_in_one_run(
    target_db_url: str,
) -> None:
    settings = settings_for(target_database_url=target_db_url, key_model="service",
                            restart_strategy="command", restart_command="true")
    lines = await preflight(settings)
    text = "\n".join(line.text() for line in lines)
    assert "PROBLEM door key installer: KEY_INSTALLER=env-file but SERVICE_ENV_FILE" in text
    assert "PROBLEM door key: the rows carry 6 old hashes" in text
    assert "SERVICE_KEY_OLD_HASH" in text
    assert "warning redis cache: REDIS_URL is empty" in text
    assert stops_rollback(lines)

    command = settings_for(target_database_url=target_db_url, key_model="service",
                           key_installer="command", key_install_command="/nowhere/install-key")
    text = "\n".join(line.text() for line in await service_lines(command))
    assert "key install command '/nowhere/install-key' not found" in text


async def test_the_service_key_is_matched_against_the_rows(
    target_db_url: str, sandbox_seed: SandboxSeed, tmp_path: Path,
) -> None:
    env = tmp_path / ".env"
    first = sandbox_seed.result.clients[0]
    conn = await asyncpg.connect(libpq_url(target_db_url))
    try:  # one door key owns every row, as on the real service
        for table in ("sessions", "assistants"):
            await conn.execute(f"UPDATE {table} SET owner_api_key_hash = $1", first.key_hash)
    finally:
        await conn.close()
    write_env_file(env, first.key)
    settings = settings_for(target_database_url=target_db_url, key_model="service",
                            service_env_file=env, restart_strategy="command",
                            restart_command="true")
    lines = by_name(await service_lines(settings))
    assert lines["door key installer"][0].startswith("ok ")
    assert "API_KEY= line will be rewritten" in lines["door key installer"][0]
    assert lines["door key"] == [f"ok      door key: one door key to replace: "
                                 f"{first.key_hash[:8]}, the hash the rows carry"]

    write_env_file(env, "a key that owns nothing")
    lines = by_name(await service_lines(settings))
    assert any(f"hashes to {sha('a key that owns nothing')[:8]}, which owns no row" in t
               for t in lines["door key"])


async def test_redis_reachable_and_not(redis_url: str, cache_prefix: str) -> None:
    ok = settings_for(redis_url=redis_url, cache_owner_key=f"{cache_prefix}session:owner:{{hash}}")
    (line,) = await service_lines(ok)
    assert line.ok and "answers; 0 owner indexes" in line.detail
    bad = settings_for(redis_url="redis://:pw@127.0.0.1:1/0")
    (line,) = await service_lines(bad)
    assert not line.ok and line.blocking and "cannot reach Redis" in line.detail
    assert "pw" not in line.text()


@pytest.mark.docker
async def test_a_container_that_sets_api_key_itself_is_a_problem_for_the_env_file(
    docker: aiodocker.Docker, host_image: str, target_db_url: str, sandbox_code_dir: Path,
    tmp_path: Path,
) -> None:
    """pydantic-settings lets the process environment beat the .env file: rewriting the file
    would change nothing the service reads."""
    env = tmp_path / ".env"
    write_env_file(env, "door")
    port, project = free_port(), f"rbt{uuid.uuid4().hex[:8]}"
    container_id = await run_api_container(
        docker, image=host_image, binds=host_binds(), database_url=target_db_url, port=port,
        code_dir=sandbox_code_dir, project=project, env_file=env,
        extra_env={"API_KEY": "door"})
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", 30)
        settings = settings_for(target_database_url=target_db_url, key_model="service",
                                service_env_file=env, api_compose_project=project)
        text = "\n".join(line.text() for line in await service_lines(settings))
        assert f"PROBLEM door key: container {project}-api-1 sets API_KEY in its own " \
               "environment" in text
    finally:
        await (await docker.containers.get(container_id)).delete(force=True)
