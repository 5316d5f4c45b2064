"""The bot's schema: a full round trip, models equal to the DDL, and `rollback-bot migrate`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from bot.db.migrate import current_revision, downgrade_to_base, head_revision, upgrade_to_head
from bot.db.models import Base
from bot.db.session import make_engine
from bot.urls import libpq_url

TABLES = {"rollback_runs", "step_executions", "approvals", "incident_events", "slack_outbox",
          "notifications", "key_rotations", "mirror_claims", "slack_refusals",
          "engine_inbox", "follow_ups", "event_deliveries", "closed_rotations",
          "incident_chain_heads", "delivery_claims"}


async def table_names(url: str) -> set[str]:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows} - {"alembic_version"}
    finally:
        await conn.close()


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_round_trip_and_models_match_ddl(empty_db_url: str) -> None:
    await upgrade_to_head(empty_db_url)
    assert await table_names(empty_db_url) == TABLES
    await downgrade_to_base(empty_db_url)
    assert await table_names(empty_db_url) == set()
    await upgrade_to_head(empty_db_url)
    assert await current_revision(empty_db_url) == head_revision()
    engine = make_engine(empty_db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


def test_migrate_command_creates_schema_and_is_idempotent(empty_db_url: str) -> None:
    binary = Path(sys.prefix) / "bin" / "rollback-bot"
    env = {**os.environ, "DATABASE_URL": empty_db_url}

    def migrate() -> str:
        result = subprocess.run([str(binary), "migrate"], env=env, capture_output=True,
                                text=True, check=False, cwd=Path(__file__).parent)
        assert result.returncode == 0, result.stderr
        return result.stdout

    first = migrate()
    assert f"at revision {head_revision()}" in first

    async def snapshot() -> list[object]:
        conn = await asyncpg.connect(libpq_url(empty_db_url))
        try:
            rows = await conn.fetch(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY 1, 2")
            return [tuple(r) for r in rows]
        finally:
            await conn.close()

    import asyncio

    before = asyncio.run(snapshot())
    migrate()
    assert asyncio.run(snapshot()) == before


async def test_incident_log_is_append_only(bot_db_url: str) -> None:
    conn = await asyncpg.connect(libpq_url(bot_db_url))
    try:
        run_id = await conn.fetchval(
            "INSERT INTO rollback_runs (id, status, initiator_id, initiator_name, reason, source)"
            " VALUES (gen_random_uuid(), 'active', 'U1', 'alice', 'r', 'slack') RETURNING id")
        await conn.execute(
            "INSERT INTO incident_events (run_id, actor, source, kind, data)"
            " VALUES ($1, 'U1', 'slack', 'run_started', '{}')", run_id)
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE incident_events SET actor = 'mallory'")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM incident_events")
        assert await conn.fetchval("SELECT actor FROM incident_events") == "U1"
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO rollback_runs (id, status, initiator_id, initiator_name, reason,"
                " source) VALUES (gen_random_uuid(), 'active', 'U2', 'bob', 'r', 'slack')")
    finally:
        await conn.close()
