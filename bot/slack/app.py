"""Builds the Bolt app: Web API client (429s retried), listeners, the thread mirror.

The Web API client keeps one HTTP session (pooled keep-alive connections): without it, every
call would open and close a connection of its own, which under a burst of clicks cost more
than the rest of the request. `SlackFront.close()` stops the mirror and closes that session.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.engine.engine import Engine
from bot.settings import Settings
from bot.slack.background import Background
from bot.slack.follow_up_notices import ThreadNotices
from bot.slack.listeners import Listeners
from bot.slack.mirror import ThreadMirror
from bot.slack.people import Engineers, person_middleware


@dataclass
class SlackFront:
    app: AsyncApp
    client: AsyncWebClient
    mirror: ThreadMirror
    background: Background
    notices: ThreadNotices  # the follow-through's messages, on the mirror's write budget
    engineers: Engineers

    def start(self) -> None:
        self.mirror.start()
        self.notices.start()

    async def close(self) -> None:
        await self.background.drain(within=30)
        await self.notices.stop()
        await self.mirror.stop()
        if self.client.session is not None:
            await self.client.session.close()


def build_client(settings: Settings) -> AsyncWebClient:
    """Call from a running event loop: the client's HTTP session belongs to it."""
    assert settings.slack_bot_token is not None
    base_url = settings.slack_api_url if settings.slack_api_url.endswith("/") \
        else settings.slack_api_url + "/"
    client = AsyncWebClient(token=settings.slack_bot_token.get_secret_value(), base_url=base_url,
                            session=aiohttp.ClientSession())
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=5))
    return client


def build_slack_front(engine: Engine, settings: Settings, *, http: bool) -> SlackFront:
    """HTTP mode verifies request signatures; Socket Mode authenticates with the app token."""
    if http:
        settings.require("slack_bot_token", "slack_signing_secret")
    else:
        settings.require("slack_bot_token", "slack_app_token")
    client = build_client(settings)
    secret = settings.slack_signing_secret
    # Listeners ack before anything else and hand the rest to `background`, so Bolt can answer
    # as soon as the listener returns instead of polling for the ack every 10 ms.
    app = AsyncApp(
        client=client,
        signing_secret=secret.get_secret_value() if secret else "",
        request_verification_enabled=http,
        process_before_response=True,
    )
    background = Background(settings.slack_reply_concurrency)
    engineers = Engineers(client, settings)
    app.use(person_middleware(engineers))  # the acting user, once per request
    mirror = ThreadMirror(engine, client, settings.slack_write_interval_seconds)
    Listeners(engine, engineers, settings, background, mirror.repost_board).register(app)
    return SlackFront(app=app, client=client, mirror=mirror, background=background,
                      notices=ThreadNotices(engine, client, mirror.budget), engineers=engineers)
