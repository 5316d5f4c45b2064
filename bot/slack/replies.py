"""Answers that reach the person who acted, wherever they acted.

`chat.postEphemeral` needs the bot in the channel and fails in DMs, so answers go by the
request's `response_url` (what Bolt's `respond` uses): Slack delivers it as an ephemeral message
to that person in that conversation, wherever it is, up to 5 times within 30 minutes. Slack
answers a failed post with an HTTP status, not an exception, so `Reply` checks it.
"""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook.async_client import AsyncWebhookClient

log = logging.getLogger(__name__)


class ReplyFailed(Exception):
    pass


class Reply:
    """Say something to the person behind one request (mrkdwn the caller has escaped)."""

    def __init__(self, response_url: str | None, session: aiohttp.ClientSession | None = None):
        self.response_url = response_url
        self.session = session

    async def __call__(self, text: str) -> None:
        if not self.response_url:
            raise ReplyFailed(f"no response_url to answer with: {text[:80]!r}")
        webhook = AsyncWebhookClient(self.response_url, session=self.session)
        answer = await webhook.send_dict({"text": text, "response_type": "ephemeral",
                                          "replace_original": False})
        if answer.status_code != 200:
            raise ReplyFailed(f"response_url answered {answer.status_code}: {answer.body[:80]}")


def failure_text(exc: BaseException) -> str:
    """What the person is told when work after the ack failed (the traceback is logged)."""
    if isinstance(exc, SlackApiError):
        cause = f"Slack answered `{exc.response.get('error', exc.response.status_code)}`"
    else:
        cause = type(exc).__name__
    return (f":x: Sorry: this failed after Slack took it ({cause}). It is in the bot's log; "
            "`/rollback-phase3 status` shows where the rollback stands.")
