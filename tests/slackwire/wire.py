"""The fake Slack that is running now, so requests built in tests carry its `trigger_id` and
`response_url` (Slack itself hands these out with every request it sends)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.slackwire.fake_web_api import FakeSlack

current: FakeSlack | None = None

OFFLINE_RESPONSE_URL = "https://hooks.slack.com/commands/T1/1/abc"


def trigger_id() -> str:
    return current.issue_trigger() if current else f"trigger-{time.monotonic_ns()}"


def response_url(user: str, channel: str) -> str:
    return current.issue_response_url(user, channel) if current else OFFLINE_RESPONSE_URL
