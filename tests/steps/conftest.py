"""Fixtures shared by the step tests. Each engineer APPENDS their own section below."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_runs
from bot.db.ledgers import SqlNotificationLedger, SqlRotationLedger
from bot.domain.memory_ledgers import MemoryNotificationLedger, MemoryRotationLedger
from bot.domain.step_protocol import StepContext
from bot.settings import Settings
from bot.urls import libpq_url
from sandbox.api import build_app
from sandbox.migrate import migrate
from tests.fixtures.http import serving

# --- steps 4 and 5 (keys and email) ------------------------------------------------------


@pytest.fixture
async def phase2_target_url(target_db_url: str) -> str:
    """The seeded sandbox target (6 clients, one without contact) after the downgrade."""
    await migrate(target_db_url, "20260201_000006", down=True)
    return target_db_url


async def add_assistants_only_client(url: str, rows: int = 2) -> str:
    """A client owning assistants but no session; returns its old hash."""
    old_hash = hashlib.sha256(secrets.token_hex(16).encode()).hexdigest()
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await conn.executemany(
            "INSERT INTO assistants (id, model, name, owner_api_key_hash) VALUES ($1, $2, $3, $4)",
            [(f"asst_only_{old_hash[:8]}_{n}", "claude-sonnet-4", "assistants only", old_hash)
             for n in range(rows)])
    finally:
        await conn.close()
    return old_hash


async def owned_rows(url: str) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(table, id) -> (owner_api_key_hash, owner_api_key) for every owned row of both tables."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        rows = await conn.fetch(
            "SELECT 'sessions' AS t, id::text AS id, owner_api_key_hash AS h, owner_api_key AS k"
            " FROM sessions WHERE owner_api_key_hash IS NOT NULL UNION ALL"
            " SELECT 'assistants', id, owner_api_key_hash, owner_api_key FROM assistants"
            " WHERE owner_api_key_hash IS NOT NULL")
    finally:
        await conn.close()
    return {(r["t"], r["id"]): (r["h"], r["k"]) for r in rows}


def keys_by_old_hash(before: Mapping[tuple[str, str], tuple[str, str | None]],
                     after: Mapping[tuple[str, str], tuple[str, str | None]],
                     ) -> dict[str, set[tuple[str, str | None]]]:
    """Old hash -> the set of (new hash, key) found on that client's rows after rotation."""
    found: dict[str, set[tuple[str, str | None]]] = {}
    for row, (old_hash, _) in before.items():
        found.setdefault(old_hash, set()).add(after[row])
    return found


def memory_context(settings: Settings, run_id: str | None = None) -> StepContext:
    return StepContext(run_id or str(uuid.uuid4()), settings, MemoryRotationLedger(),
                       MemoryNotificationLedger())


@pytest.fixture
async def sql_run_id(bot_sessionmaker: async_sessionmaker[AsyncSession]) -> str:
    """A run row in the bot database, for the SQL ledgers' foreign keys."""
    async with bot_sessionmaker() as session, session.begin():
        run = await repo_runs.create_run(session, initiator_id="U_TEST", initiator_name="test",
                                         reason="step test", source="terminal", channel_id=None)
        return str(run.id)  # type: ignore[union-attr]


def sql_context(settings: Settings, sessions: async_sessionmaker[AsyncSession],
                run_id: str) -> StepContext:
    return StepContext(run_id, settings, SqlRotationLedger(sessions),
                       SqlNotificationLedger(sessions))


# --- step 5's canary: the api the new keys are tried on before anyone is mailed ------------


@pytest.fixture
async def sandbox_api_url(target_db_url: str) -> AsyncIterator[str]:
    """The sandbox api's code (Phase 2: restarted after the downgrade) served over real HTTP
    in this process, against this test's target; its base URL."""
    async with serving(build_app(phase=2, database_url=target_db_url)) as base_url:
        yield base_url


@pytest.fixture
def phase2_api(sandbox_api_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Step 5 tries a sample of the new keys on the api before it mails anyone. A test module
    about mailing uses this fixture for all its tests (`pytest.mark.usefixtures`): the api is
    named as a deployment names it, `API_BASE_URL` in the environment, which every `Settings`
    the test builds reads."""
    monkeypatch.setenv("API_BASE_URL", sandbox_api_url)
    return sandbox_api_url
