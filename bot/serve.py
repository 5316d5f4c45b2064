"""`rollback-bot serve`: check the bot's schema, recover interrupted work, then serve Slack."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.db.migrate import current_revision, head_revision
from bot.db.session import make_engine, make_sessionmaker
from bot.engine.engine import Engine
from bot.engine.registry import default_steps
from bot.settings import Settings, SettingsError
from bot.slack.app import build_slack_front
from bot.slack.http import build_web_app

log = logging.getLogger(__name__)


async def ensure_schema(database_url: str) -> None:
    current, head = await current_revision(database_url), head_revision()
    if current != head:
        raise SettingsError(
            f"the bot database is at revision {current or 'none'}, not {head}: "
            "run `rollback-bot migrate` first"
        )


async def serve(settings: Settings, *, http: bool, host: str, port: int) -> None:
    settings.require("database_url")
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    await ensure_schema(url)
    db = make_engine(url)
    engine = Engine(make_sessionmaker(db), settings, default_steps())
    front = build_slack_front(engine, settings, http=http)
    await engine.recover()
    front.mirror.start()
    try:
        if http:
            runner = web.AppRunner(build_web_app(front.app))
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
            log.info("serving Slack over HTTP on %s:%d/slack/events", host, port)
            await asyncio.Event().wait()
        else:
            assert settings.slack_app_token is not None
            handler = AsyncSocketModeHandler(front.app, settings.slack_app_token.get_secret_value())
            log.info("connecting to Slack over Socket Mode")
            await handler.start_async()
    finally:
        await front.mirror.stop()
        await engine.shutdown()
        await db.dispose()
