"""`rollback-bot serve`: check the bot's schema, recover interrupted work, then serve Slack.

SIGTERM (`docker stop`, systemd, Kubernetes) and SIGINT stop it cleanly: a running step is
cancelled and the programs it runs are killed with their process group — never left running
orphaned for a second copy to race after the restart — and its lease is left to lapse, so the
next replica (or this one, restarted) examines it as after a crash.
"""

from __future__ import annotations

import asyncio
import logging
import signal

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
        stop = stop_on_signals()
        runner: web.AppRunner | None = None
        handler: AsyncSocketModeHandler | None = None
        try:
            if http:
                runner = web.AppRunner(build_web_app(front.app))
                await runner.setup()
                await web.TCPSite(runner, host, port).start()
                log.info("serving Slack over HTTP on %s:%d/slack/events", host, port)
            else:
                assert settings.slack_app_token is not None
                handler = AsyncSocketModeHandler(front.app,
                                                 settings.slack_app_token.get_secret_value())
                log.info("connecting to Slack over Socket Mode")
                await handler.connect_async()  # type: ignore[no-untyped-call]
            received = await stop
            log.info("%s: stopping; a running step is stopped with its programs, and its "
                     "lease left to lapse for the next replica to examine", received.name)
        finally:
            if runner is not None:
                await runner.cleanup()
            if handler is not None:
                await handler.close_async()  # type: ignore[no-untyped-call]
            await follow.stop()
            await front.close()
            if pager is not None:
                await pager.close()


def stop_on_signals() -> asyncio.Future[signal.Signals]:
    """Resolves with the first SIGTERM or SIGINT received."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    return received
