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
from bot.startup import open_engines
from bot.targets import Targets

log = logging.getLogger(__name__)


async def serve(targets: Targets | Settings, *, http: bool, host: str, port: int) -> None:
    """Every usable target in one process, one engine each (a refused target is logged with
    what is missing, and the others are served); `Settings`: the one target they are."""
    served = (targets,) if isinstance(targets, Settings) else targets.serving(log)
    refused = {} if isinstance(targets, Settings) else dict(targets.refused)
    settings = served[0]
    async with open_engines(served) as engines:
        front = build_slack_front(engines, settings, http=http, refused=refused)
        for engine in engines:
            await engine.recover()
        front.start()
        follows, pagers = [], []
        for engine, target in zip(engines, front.targets.served, strict=True):
            pager = pager_from_settings(engine.settings)
            pagers.append(pager)
            log.info("%s%s", f"target {engine.target}: " if len(engines) > 1 else "",
                     paging_status(pager is not None, engine.settings.page_on,
                                   engine.settings.pagerduty_events_url))
            follow = FollowThrough(engine, pager, approvers=target.engineers.authorised)
            follow.start()
            follows.append(follow)
        log.info("serving target%s %s", "s" if len(engines) > 1 else "",
                 ", ".join(engine.target for engine in engines))
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
            for follow in follows:
                await follow.stop()
            await front.close()
            for pager in pagers:
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
