"""`rollback-bot serve`: check the bot's schema, recover interrupted work, then serve Slack."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.domain.paging_policy import paging_status
from bot.engine.follow_through import FollowThrough
from bot.paging.events_api import pager_from_settings
from bot.settings import Settings
from bot.slack.app import build_slack_front
from bot.slack.http import build_web_app
from bot.startup import open_engine

log = logging.getLogger(__name__)


async def serve(settings: Settings, *, http: bool, host: str, port: int) -> None:
    async with open_engine(settings) as engine:
        front = build_slack_front(engine, settings, http=http)
        await engine.recover()
        front.start()
        pager = pager_from_settings(settings)
        log.info(paging_status(pager is not None, settings.page_on,
                               settings.pagerduty_events_url))
        follow = FollowThrough(engine, pager, approvers=front.engineers.authorised)
        follow.start()
        try:
            if http:
                runner = web.AppRunner(build_web_app(front.app))
                await runner.setup()
                await web.TCPSite(runner, host, port).start()
                log.info("serving Slack over HTTP on %s:%d/slack/events", host, port)
                await asyncio.Event().wait()
            else:
                assert settings.slack_app_token is not None
                handler = AsyncSocketModeHandler(front.app,
                                                 settings.slack_app_token.get_secret_value())
                log.info("connecting to Slack over Socket Mode")
                await handler.start_async()  # type: ignore[no-untyped-call]
        finally:
            await follow.stop()
            await front.close()
            if pager is not None:
                await pager.close()
