"""Migration 0002_adopt on a bot database that already holds runs: a rotation whose step 5 was
done is closed; an open one (step 4 begun, step 5 not done) is what the next run continues."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from alembic import command

from bot.db import repo_rotations
from bot.db.migrate import alembic_config, upgrade_to_head
from bot.db.session import make_engine, make_sessionmaker
from bot.urls import libpq_url

RUN = ("INSERT INTO rollback_runs (id, status, initiator_id, initiator_name, reason, source,"
       " created_at) VALUES ($1, 'aborted', 'U1', 'alice', 'test', 'slack',"
       " now() - make_interval(mins => $2))")
STEP = ("INSERT INTO step_executions (id, run_id, step, attempt, status, plan, plan_fingerprint,"
        " started_at) VALUES (gen_random_uuid(), $1, $2, 1, $3, '{}', 'f', now())")


async def test_finished_rotations_are_closed_and_an_open_one_is_continued(
    empty_db_url: str,
) -> None:
    await asyncio.to_thread(command.upgrade, alembic_config(empty_db_url), "0002_follow_ups")
    finished, stopped = uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(libpq_url(empty_db_url))
    try:
        await conn.execute(RUN, finished, 60)
        await conn.execute(STEP, finished, "rotate_keys", "succeeded")
        await conn.execute(STEP, finished, "email_clients", "succeeded")
        await conn.execute(RUN, stopped, 30)  # aborted in step 4, before the upgrade
        await conn.execute(STEP, stopped, "rotate_keys", "interrupted")
    finally:
        await conn.close()
    await upgrade_to_head(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        async with make_sessionmaker(engine)() as session:
            assert await repo_rotations.is_closed(session, str(finished))
            assert not await repo_rotations.is_closed(session, str(stopped))
            assert await repo_rotations.open_rotation_before(
                session, str(uuid.uuid4()), "default") \
                == stopped
    finally:
        await engine.dispose()
