"""Delivery claims on a real bot database: who may send an entry, and when a claim that lapsed
is taken again (counted, so the taker examines what went out); migration 0006_delivery_claims
goes up and down with the log intact."""

from __future__ import annotations

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_deliveries, repo_delivery_claims, repo_events
from bot.db.repo_deliveries import Target
from bot.domain.events import EventKind, Source
from bot.urls import libpq_url
from tests.db.test_migration_targets import add_run, migrate
from tests.db.test_rotation_ledger import new_run


async def an_entry(sessions: async_sessionmaker[AsyncSession]) -> tuple[str, int]:
    run_id = await new_run(sessions)
    async with sessions() as s, s.begin():
        event_id = await repo_events.append_event(s, run_id, "bot", Source.BOT,
                                                  EventKind.ESCALATED, None, {"why": "x"})
    return run_id, event_id


async def take(sessions: async_sessionmaker[AsyncSession], event_id: int, owner: str,
               target: Target = Target.SLACK) -> int | None:
    async with sessions() as s, s.begin():
        return await repo_delivery_claims.take(s, event_id, target.value, owner, 30)


async def test_one_holder_at_a_time_and_a_lapsed_claim_is_taken_again_counted(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    run_id, event_id = await an_entry(bot_sessionmaker)
    assert await take(bot_sessionmaker, event_id, "replica-a") == 1
    assert await take(bot_sessionmaker, event_id, "replica-b") is None, "a live claim holds"
    assert await take(bot_sessionmaker, event_id, "replica-b", Target.PAGERDUTY) == 1, \
        "each target is claimed on its own"
    async with bot_sessionmaker() as s, s.begin():
        assert not await repo_delivery_claims.renew(s, event_id, "slack", "replica-b", 30)
        assert await repo_delivery_claims.renew(s, event_id, "slack", "replica-a", 30)
        await s.execute(text("UPDATE delivery_claims SET expires_at = now() - interval '1 s' "
                             "WHERE target = 'slack'"))  # replica-a stalled past its lease
    assert await take(bot_sessionmaker, event_id, "replica-b") == 2, "a lapsed claim: counted"
    async with bot_sessionmaker() as s, s.begin():
        assert not await repo_delivery_claims.still_mine(s, event_id, "slack", "replica-a")
        assert await repo_delivery_claims.still_mine(s, event_id, "slack", "replica-b")
        await repo_deliveries.record(s, event_id, run_id, Target.SLACK, {"ts": "1.2"})
        await repo_delivery_claims.finish(s, event_id, "slack")
    assert await take(bot_sessionmaker, event_id, "replica-c") is None, "delivered: never again"
    async with bot_sessionmaker() as s:
        left = (await s.execute(text("SELECT target FROM delivery_claims"))).scalars().all()
    assert left == ["pagerduty"]


async def test_migration_goes_up_and_down_with_the_log_intact(empty_db_url: str) -> None:
    await migrate(empty_db_url, "0005_targets")
    conn = await asyncpg.connect(libpq_url(empty_db_url))
    try:
        run_id = await add_run(conn, "completed")
        await migrate(empty_db_url, "0006_delivery_claims")
        event_id = await conn.fetchval(
            "INSERT INTO incident_events (run_id, actor, source, kind, data) VALUES "
            "($1, 'bot', 'bot', 'escalated', '{}') RETURNING id", run_id)
        await conn.execute("INSERT INTO delivery_claims (event_id, target, owner, expires_at) "
                           "VALUES ($1, 'slack', 'r', now())", event_id)
        await migrate(empty_db_url, "0005_targets", down=True)
        assert await conn.fetchval("SELECT to_regclass('delivery_claims')") is None
        assert await conn.fetchval("SELECT count(*) FROM incident_events") == 1
        await migrate(empty_db_url, "head")
        assert await conn.fetchval("SELECT count(*) FROM delivery_claims") == 0
    finally:
        await conn.close()
