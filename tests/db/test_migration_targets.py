"""Migration 0005_targets on a bot database holding a finished run: its run, steps, ledgers and
closed rotation move to the target `default`; a run's rows take its target; one active run per
target; the downgrade refuses while another target's runs exist, and otherwise gives back the
schema of before with the finished run intact."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from alembic import command

from bot.db.migrate import alembic_config
from bot.urls import libpq_url

BEFORE = "0003_event_chain"
TARGETED = ("rollback_runs", "step_executions", "notifications", "key_rotations",
            "closed_rotations")


async def migrate(url: str, revision: str, down: bool = False) -> None:
    how = command.downgrade if down else command.upgrade
    await asyncio.to_thread(how, alembic_config(url), revision)


async def add_run(conn: asyncpg.Connection, status: str, target: str | None = None) -> str:
    columns, values = "", ""
    if target is not None:
        columns, values = ", target", f", '{target}'"
    return str(await conn.fetchval(
        "INSERT INTO rollback_runs (id, status, initiator_id, initiator_name, reason, source"
        f"{columns}) VALUES (gen_random_uuid(), '{status}', 'U1', 'alice', 'r', 'slack'"
        f"{values}) RETURNING id"))


async def add_finished_run_rows(conn: asyncpg.Connection, run_id: str, tag: str) -> None:
    """What a finished run leaves: its steps, both ledgers, its closed rotation."""
    await conn.execute(
        "INSERT INTO step_executions (id, run_id, step, attempt, status, plan, "
        "plan_fingerprint) VALUES (gen_random_uuid(), $1, 'email_clients', 1, 'succeeded', "
        "'{}', 'f')", run_id)
    await conn.execute("INSERT INTO key_rotations (run_id, old_hash, new_hash) "
                       "VALUES ($1, $2, $3)", run_id, f"old{tag}", f"new{tag}")
    await conn.execute("INSERT INTO notifications (run_id, client_hash, email, status, "
                       "attempts) VALUES ($1, $2, 'a@example.test', 'sent', 1)",
                       run_id, f"old{tag}")
    await conn.execute("INSERT INTO closed_rotations (rotation_id, closed_in_run, facts) "
                       "VALUES ($1, $1, '{}')", run_id)


async def targets_of(conn: asyncpg.Connection, run_id: str) -> dict[str, set[str]]:
    found = {}
    for table in TARGETED:
        column = {"rollback_runs": "id", "closed_rotations": "rotation_id"}.get(table, "run_id")
        rows = await conn.fetch(f"SELECT target FROM {table} WHERE {column} = $1", run_id)
        found[table] = {r["target"] for r in rows}
    return found


async def columns(conn: asyncpg.Connection, column: str) -> set[str]:
    """The tables with that column (event_deliveries' `target` is where a delivery goes)."""
    rows = await conn.fetch("SELECT table_name FROM information_schema.columns WHERE "
                            "table_schema = 'public' AND column_name = $1", column)
    return {r["table_name"] for r in rows} - {"event_deliveries"}


async def test_existing_data_moves_to_default_and_the_migration_goes_up_and_down(
    empty_db_url: str,
) -> None:
    await migrate(empty_db_url, BEFORE)
    conn = await asyncpg.connect(libpq_url(empty_db_url))
    try:
        finished = await add_run(conn, "completed")
        await add_finished_run_rows(conn, finished, "a")
        await migrate(empty_db_url, "0005_targets")
        assert await targets_of(conn, finished) == {t: {"default"} for t in TARGETED}

        staging = await add_run(conn, "completed", "staging")
        await add_finished_run_rows(conn, staging, "b")
        assert await targets_of(conn, staging) == {t: {"staging"} for t in TARGETED}, \
            "a run's rows take its target"
        await add_run(conn, "active", "staging")
        await add_run(conn, "active", "production")  # two targets at once
        with pytest.raises(asyncpg.UniqueViolationError):
            await add_run(conn, "active", "staging")

        with pytest.raises(Exception, match="targets other than default"):
            await migrate(empty_db_url, BEFORE, down=True)
        assert await columns(conn, "target") == set(TARGETED), "refused: nothing changed"
        for table, column in (("closed_rotations", "rotation_id"), ("notifications", "run_id"),
                              ("key_rotations", "run_id"), ("step_executions", "run_id")):
            await conn.execute(f"DELETE FROM {table} WHERE {column} IN "
                               "(SELECT id FROM rollback_runs WHERE target <> 'default')")
        await conn.execute("DELETE FROM rollback_runs WHERE target <> 'default'")

        await migrate(empty_db_url, BEFORE, down=True)
        assert await columns(conn, "target") == set()
        assert await conn.fetchval("SELECT status FROM rollback_runs WHERE id = $1",
                                   finished) == "completed"
        assert await conn.fetchval("SELECT count(*) FROM notifications") == 1
        await add_run(conn, "active")
        with pytest.raises(asyncpg.UniqueViolationError):
            await add_run(conn, "active")  # one at a time again, as before 0005
        await conn.execute("DELETE FROM rollback_runs WHERE status = 'active'")
        await migrate(empty_db_url, "head")
        assert await targets_of(conn, finished) == {t: {"default"} for t in TARGETED}
    finally:
        await conn.close()
