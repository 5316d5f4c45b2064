"""Builds the Bolt app: Web API client (429s retried), listeners, the thread mirror.

The Web API client keeps one HTTP session (pooled keep-alive connections): without it, every
call would open and close a connection of its own, which under a burst of clicks cost more
than the rest of the request. `SlackFront.close()` stops the mirror and closes that session.

One front serves every target: one Bolt app, one Web API client and one thread mirror (the
channel's write budget is Slack's, whatever the target), each target with its own engine and
its own approvers (`ServedTargets`), its own follow-through notices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from bot.slack.served_targets import ServedTarget, ServedTargets


@dataclass
class SlackFront:
    app: AsyncApp
    client: AsyncWebClient
    mirror: ThreadMirror
    background: Background
    notices: tuple[ThreadNotices, ...]  # each target's follow-through messages, on the
    # mirror's write budget
    targets: ServedTargets

    def start(self) -> None:
        self.mirror.start()
        self.start_notices()

    def start_notices(self) -> None:
        for notices in self.notices:
            notices.start()

    async def close(self, within: float = 30) -> None:
        """Acked work gets `within` s (`Background.drain`), then the rest is stopped."""
        await self.background.drain(within)
        for notices in self.notices:
            await notices.stop()
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


def build_slack_front(engine: Engine | Sequence[Engine], settings: Settings, *, http: bool,
                      refused: Mapping[str, str] | None = None) -> SlackFront:
    """HTTP mode verifies request signatures; Socket Mode authenticates with the app token.
    `engine`: one per target served (`settings` holds the bot-wide ones: Slack, the channel);
    `refused`: targets configured but not served, and why."""
    engines = (engine,) if isinstance(engine, Engine) else tuple(engine)
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
    targets = ServedTargets([ServedTarget(e, Engineers(client, e.settings)) for e in engines],
                            dict(refused or {}))
    app.use(person_middleware(targets.first.engineers))  # the acting user, once per request
    mirror = ThreadMirror(engines[0], client, settings.slack_write_interval_seconds)
    for other in engines[1:]:  # every target's runs, in their own threads
        mirror.serve(other)
    Listeners(targets, background, mirror.repost_board).register(app)
    return SlackFront(app=app, client=client, mirror=mirror, background=background,
                      notices=tuple(ThreadNotices(e, client, mirror.budget) for e in engines),
                      targets=targets)
