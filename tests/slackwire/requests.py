"""Requests exactly as Slack sends them to `POST /slack/events`, signed with the app's secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from tests.slackwire import wire

TEAM = {"id": "T1", "domain": "acme"}


def sign(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded"}


def slash_command(text: str, user_id: str, channel_id: str, channel_name: str,
                  command: str = "/rollback-phase3") -> bytes:
    return urlencode({
        "token": "legacy-verification-token", "team_id": "T1", "team_domain": "acme",
        "channel_id": channel_id, "channel_name": channel_name, "user_id": user_id,
        "user_name": user_id.lower(), "command": command, "text": text, "api_app_id": "A1",
        "is_enterprise_install": "false",
        "response_url": wire.response_url(user_id, channel_id),
        "trigger_id": wire.trigger_id(),
    }).encode()


def _user(user_id: str) -> dict[str, str]:
    return {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": "T1"}


def block_actions(user_id: str, action_id: str, value: str, channel_id: str, message_ts: str,
                  thread_ts: str | None) -> bytes:
    message: dict[str, Any] = {"type": "message", "ts": message_ts, "text": "", "blocks": [],
                               "bot_id": "BBOT", "user": "UBOT"}
    container: dict[str, Any] = {"type": "message", "message_ts": message_ts,
                                 "channel_id": channel_id, "is_ephemeral": False}
    if thread_ts:
        message["thread_ts"] = container["thread_ts"] = thread_ts
    payload = {
        "type": "block_actions", "user": _user(user_id), "api_app_id": "A1",
        "token": "legacy-verification-token", "container": container,
        "trigger_id": wire.trigger_id(), "team": TEAM, "enterprise": None,
        "is_enterprise_install": False, "channel": {"id": channel_id, "name": "oncall"},
        "message": message, "state": {"values": {}},
        "response_url": wire.response_url(user_id, channel_id),
        "actions": [{"action_id": action_id, "block_id": "b1", "text": {"type": "plain_text",
                     "text": "x"}, "value": value, "type": "button",
                     "action_ts": str(time.time())}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def view_submission(user_id: str, callback_id: str, private_metadata: str,
                    values: dict[str, Any]) -> bytes:
    payload = {
        "type": "view_submission", "team": TEAM, "user": _user(user_id), "api_app_id": "A1",
        "token": "legacy-verification-token", "trigger_id": wire.trigger_id(),
        "view": {"id": "V1", "type": "modal", "callback_id": callback_id,
                 "private_metadata": private_metadata, "state": {"values": values},
                 "hash": "h1"},
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def trigger_in(body: bytes) -> str | None:
    """The trigger_id a request carries (None: none), to restamp when it is really sent."""
    form = dict(parse_qsl(body.decode(), keep_blank_values=True))
    if "payload" in form:
        try:
            return json.loads(form["payload"]).get("trigger_id")  # type: ignore[no-any-return]
        except ValueError:
            return None
    return form.get("trigger_id")
