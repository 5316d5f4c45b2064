"""`GET /health` is liveness, `GET /ready` readiness: 503 while draining or while the bot
database's schema is behind the code's head, 200 otherwise."""

from __future__ import annotations

import asyncio

import aiohttp
from alembic import command
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.migrate import alembic_config
from bot.readiness import Readiness
from bot.slack.http import build_web_app
from tests.slackwire.serve import serve_on_free_port


async def probes(readiness: Readiness) -> tuple[tuple[int, int], dict[str, str]]:
    """(health status, ready status), and what /ready said."""
    app = AsyncApp(client=AsyncWebClient(token="xoxb-ready"), signing_secret="s",
                   process_before_response=True)
    runner, port = await serve_on_free_port(build_web_app(app, readiness.refusal))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/health") as health:
                alive = health.status
            async with http.get(f"http://127.0.0.1:{port}/ready") as ready:
                return (alive, ready.status), await ready.json()
    finally:
        await runner.cleanup()


async def test_ready_at_head_and_not_while_draining(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    readiness = Readiness(bot_sessionmaker)
    assert await probes(readiness) == ((200, 200), {"status": "ready"})
    readiness.draining = True
    statuses, said = await probes(readiness)
    assert statuses == (200, 503), "alive, but no new requests please"
    assert "draining" in said["reason"]


async def test_not_ready_while_the_schema_is_behind_the_code(
    bot_db_url: str, bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(bot_db_url), "-1")
    statuses, said = await probes(Readiness(bot_sessionmaker))
    assert statuses == (200, 503)
    assert said["reason"].startswith("bot database schema at ")
    await asyncio.to_thread(command.upgrade, alembic_config(bot_db_url), "head")
    assert (await probes(Readiness(bot_sessionmaker)))[0] == (200, 200)
