"""The sandbox behaves like the service being rolled back: its migrations, its API, its logs."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from pathlib import Path

import aiodocker
import aiohttp
import asyncpg
import pytest

from bot.db.urls import libpq_url
from sandbox.migrate import migrate
from tests.fixtures.postgres import DatabaseFactory
from tests.fixtures.sandbox import SandboxApi, SandboxSeed

REPO = Path(__file__).resolve().parents[2]


async def fetch(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def test_chain_up_down_to_phase2_and_up_again(databases: DatabaseFactory) -> None:
    url = await databases.create("chain")
    await migrate(url, "head")
    assert (await fetch(url, "SELECT version_num FROM alembic_version"))[0][0] == "9ddfdd63af30"
    await fetch(url, "INSERT INTO sessions (id, model, owner_api_key_hash) VALUES "
                     "(gen_random_uuid(), 'm', repeat('a', 64))")
    await migrate(url, "20260201_000006", down=True)
    columns = await fetch(url, "SELECT table_name, column_name FROM information_schema.columns "
                               "WHERE column_name LIKE 'owner_api_key%' ORDER BY 1, 2")
    assert [tuple(c) for c in columns] == [
        ("assistants", "owner_api_key"), ("assistants", "owner_api_key_hash"),
        ("sessions", "owner_api_key"), ("sessions", "owner_api_key_hash")]
    rows = await fetch(url, "SELECT owner_api_key, owner_api_key_hash FROM sessions")
    assert rows[0]["owner_api_key"] is None and rows[0]["owner_api_key_hash"] == "a" * 64
    indexes = {r[0] for r in await fetch(url, "SELECT indexname FROM pg_indexes")}
    assert {"idx_sessions_owner_api_key", "idx_assistants_owner_api_key"} <= indexes
    await migrate(url, "head")
    assert not await fetch(url, "SELECT 1 FROM information_schema.columns "
                                "WHERE column_name = 'owner_api_key'")


async def test_seed_command_writes_the_directory(
    tmp_path: Path, databases: DatabaseFactory
) -> None:
    url = await databases.create("seedcli")  # uniquely named, dropped at the end

    async def sandbox(*args: str) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sandbox", *args, cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await process.communicate()
        assert process.returncode == 0, err.decode()

    await sandbox("migrate", "--database-url", url)
    out = tmp_path / "clients.csv"
    await sandbox("seed", "--database-url", url, "--clients", "10", "--without-contact", "3",
                  "--directory-csv", str(out))
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7 and set(rows[0]) == {"name", "email", "api_key_sha256"}
    hashes = {r[0] for r in await fetch(url, "SELECT DISTINCT owner_api_key_hash FROM sessions")}
    assert len(hashes) == 10 and {r["api_key_sha256"] for r in rows} < hashes


async def get(url: str, key: str | None) -> tuple[int, dict[str, object]]:
    headers = {"X-API-Key": key} if key else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as answer:
        return answer.status, await answer.json()


@pytest.mark.docker
async def test_api_container_answers_logs_and_survives_restart(
    sandbox_api: SandboxApi, sandbox_seed: SandboxSeed, docker: aiodocker.Docker
) -> None:
    client = sandbox_seed.result.clients[0]
    url = f"{sandbox_api.base_url}/api/v1/sessions"
    status, body = await get(url, client.key)
    assert status == 200
    assert {s["id"] for s in body["sessions"]} == set(client.session_ids)  # type: ignore[union-attr]
    status, body = await get(url, "not-a-key")
    assert status == 401 and body["error"]["code"] == "AUTHENTICATION_ERROR"  # type: ignore[index]
    container = await docker.containers.get(sandbox_api.container_id)
    assert container["Config"]["Labels"]["com.docker.compose.service"] == "api"
    logs = "".join(await container.log(stdout=True, stderr=True))
    assert '"event": "ownership_check_failed"' in logs and client.key not in logs
    await container.restart(timeout=5)
    from sandbox.container import wait_healthy

    await wait_healthy(sandbox_api.base_url, 30)
    assert (await get(url, client.key))[0] == 200


@pytest.mark.docker
async def test_phase2_code_after_downgrade_and_restart(
    sandbox_api: SandboxApi, docker: aiodocker.Docker
) -> None:
    await migrate(sandbox_api.database_url, "20260201_000006", down=True)
    subprocess.run(["git", "checkout", "-q", "phase-2"], cwd=sandbox_api.code_dir, check=True)
    new_key = "phase-2-test-key"
    await fetch(sandbox_api.database_url,
                "UPDATE sessions SET owner_api_key = 'phase-2-test-key', owner_api_key_hash = "
                "encode(sha256('phase-2-test-key'::bytea), 'hex') WHERE id = "
                "(SELECT id FROM sessions ORDER BY id LIMIT 1)")
    container = await docker.containers.get(sandbox_api.container_id)
    await container.restart(timeout=5)
    from sandbox.container import wait_healthy

    await wait_healthy(sandbox_api.base_url, 30)
    async with aiohttp.ClientSession() as http, \
            http.get(f"{sandbox_api.base_url}/health") as answer:
        assert (await answer.json())["phase"] == 2
    status, body = await get(f"{sandbox_api.base_url}/api/v1/sessions", new_key)
    assert status == 200 and body["total"] == 1
