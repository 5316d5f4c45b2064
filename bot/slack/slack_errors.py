"""Which Web API failures are worth retrying, and which Slack will refuse for ever.

Retrying a permanent error froze the thread: the same write every 2 s, everything queued
behind it waiting. Each kind below has its own handling in the mirror (see `ThreadMirror`).
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

import aiohttp
from slack_sdk.errors import SlackApiError


class Failure(StrEnum):
    TRANSIENT = "transient"  # an outage or a rate limit: retry, within a budget
    MESSAGE_GONE = "message_gone"  # the message was deleted: post it again
    THREAD_GONE = "thread_gone"  # the thread's root is gone: a new root, linking back
    CHANNEL_REFUSED = "channel_refused"  # not in it, gone, archived: re-home or tell the initiator
    CONTENT_REFUSED = "content_refused"  # our drawing breaks Slack's limits: a plainer one
    AUTH = "auth"  # the token cannot write at all: tell someone, never retry


TRANSIENT_ERRORS = frozenset({
    "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
    "request_timeout", "team_added_to_org", "timeout",
})
PERMANENT_ERRORS: dict[str, Failure] = {
    "message_not_found": Failure.MESSAGE_GONE,
    "cant_update_message": Failure.MESSAGE_GONE,
    "thread_not_found": Failure.THREAD_GONE,
    "not_in_channel": Failure.CHANNEL_REFUSED,
    "channel_not_found": Failure.CHANNEL_REFUSED,
    "is_archived": Failure.CHANNEL_REFUSED,
    "restricted_action": Failure.CHANNEL_REFUSED,
    "restricted_action_read_only_channel": Failure.CHANNEL_REFUSED,
    "restricted_action_thread_only_channel": Failure.CHANNEL_REFUSED,
    "invalid_blocks": Failure.CONTENT_REFUSED,
    "invalid_blocks_format": Failure.CONTENT_REFUSED,
    "msg_too_long": Failure.CONTENT_REFUSED,
    "no_text": Failure.CONTENT_REFUSED,
    "invalid_metadata_format": Failure.CONTENT_REFUSED,
    "invalid_metadata_schema": Failure.CONTENT_REFUSED,
    "metadata_too_large": Failure.CONTENT_REFUSED,
    "too_many_attachments": Failure.CONTENT_REFUSED,
    "invalid_arguments": Failure.CONTENT_REFUSED,
    "token_revoked": Failure.AUTH,
    "token_expired": Failure.AUTH,
    "invalid_auth": Failure.AUTH,
    "not_authed": Failure.AUTH,
    "account_inactive": Failure.AUTH,
    "missing_scope": Failure.AUTH,
    "not_allowed_token_type": Failure.AUTH,
    "ekm_access_denied": Failure.AUTH,
    "access_denied": Failure.AUTH,
}


def error_code(exc: BaseException) -> str:
    """Slack's `error` string, or a name for a failure that never got an answer."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        code = response.get("error") if hasattr(response, "get") else None
        return str(code or f"http_{getattr(response, 'status_code', '?')}")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    return type(exc).__name__


def classify(exc: BaseException) -> Failure:
    """Timeouts, dropped connections, 429 and 5xx are transient; so is an error we do not
    know (within the retry budget, it never blocks the writes behind it for long)."""
    if not isinstance(exc, SlackApiError):
        return Failure.TRANSIENT
    status = getattr(exc.response, "status_code", 200)
    if status == 429 or status >= 500:
        return Failure.TRANSIENT
    code = error_code(exc)
    if code in TRANSIENT_ERRORS:
        return Failure.TRANSIENT
    return PERMANENT_ERRORS.get(code, Failure.TRANSIENT)


def is_slack_failure(exc: BaseException) -> bool:
    """A failure of the Web API call itself (not a bug of ours)."""
    return isinstance(exc, SlackApiError | TimeoutError | aiohttp.ClientError | OSError)
