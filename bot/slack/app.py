"""Builds the Bolt app: Web API client (429s retried), listeners, the thread mirror."""

from __future__ import annotations

from dataclasses import dataclass

from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.engine.engine import Engine
from bot.settings import Settings
from bot.slack.listeners import Listeners
from bot.slack.mirror import ThreadMirror
from bot.slack.people import Engineers


@dataclass
class SlackFront:
    app: AsyncApp
    client: AsyncWebClient
    mirror: ThreadMirror


def build_client(settings: Settings) -> AsyncWebClient:
    assert settings.slack_bot_token is not None
    base_url = settings.slack_api_url if settings.slack_api_url.endswith("/") \
        else settings.slack_api_url + "/"
    client = AsyncWebClient(token=settings.slack_bot_token.get_secret_value(), base_url=base_url)
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
    app = AsyncApp(
        client=client,
        signing_secret=secret.get_secret_value() if secret else "",
        request_verification_enabled=http,
    )
    Listeners(engine, Engineers(client, settings), settings).register(app)
    return SlackFront(app=app, client=client, mirror=ThreadMirror(
        engine, client, settings.slack_write_interval_seconds))
