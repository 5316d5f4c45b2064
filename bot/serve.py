"""`rollback-bot serve`: check the bot's schema, recover interrupted work, then serve Slack.

SIGTERM (`docker stop`, systemd, Kubernetes) and SIGINT stop it cleanly, within
SHUTDOWN_SECONDS and a little: `/ready` answers 503 at once (a load balancer stops sending), the
listener closes and the requests in flight are answered; acked work (a click's processing, a
reply) then gets what is left of SHUTDOWN_SECONDS (its last 2 s only for work already running),
and what has not finished is handed over: a click's inbox row is committed before its ack, so
the next replica's inbox watcher does it.
A running step is cancelled and the programs it runs are killed with their process group —
never left running orphaned for a second copy to race after the restart — and its lease is
left to lapse, so the next replica (or this one, restarted) examines it as after a crash.
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
from bot.readiness import Readiness
from bot.settings import Settings
from bot.slack.app import build_slack_front
from bot.slack.background import FINISH_SECONDS
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
        readiness = Readiness(engines[0].sessions)
        runner: web.AppRunner | None = None
        handler: AsyncSocketModeHandler | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.shutdown_seconds  # reset when the signal comes
        try:
            if http:
                runner = web.AppRunner(build_web_app(front.app, readiness.refusal),
                                       shutdown_timeout=min(3.0, settings.shutdown_seconds))
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
            readiness.draining = True
            deadline = loop.time() + settings.shutdown_seconds
            log.info("%s: stopping; acked work gets %.0f s, then is handed over; a running "
                     "step is stopped with its programs, and its lease left to lapse for the "
                     "next replica to examine", received.name, settings.shutdown_seconds)
        finally:
            readiness.draining = True
            if runner is not None:
                await runner.cleanup()  # closes the listener, answers the requests in flight
            if handler is not None:
                await handler.close_async()  # type: ignore[no-untyped-call]
            left = max(0.0, deadline - loop.time())
            finish = min(FINISH_SECONDS, left / 3)  # the last of it: only work already running
            await front.background.drain(left - finish, finish)
            for follow in follows:
                await follow.stop()
            await front.close(within=0)
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
