"""Posts that happen once, even when Slack applies a post and its answer is lost.

Every message the bot posts carries its identity as Slack message metadata
(`event_type: rollback_message`, payload `{run, step, attempt, kind}`). Before posting into a
thread it has not read since it took the run over, or after any post of that run failed or went
unanswered, the writer reads the thread (`conversations.replies`, or the channel's history for
the root, `include_all_metadata=true`) and adopts what it finds instead of posting again.
Uploads are recognised by their file name and title.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

METADATA_EVENT = "rollback_message"
PAGE = 200  # Slack recommends no more than 200 results a page


@dataclass(frozen=True)
class Identity:
    """What a message is, for the thread to be searched by: kind is board, step or summary."""

    run: str
    kind: str
    step: str = ""
    attempt: int = 0

    def metadata(self) -> dict[str, Any]:
        return {"event_type": METADATA_EVENT, "event_payload": {
            "run": self.run, "step": self.step, "attempt": self.attempt, "kind": self.kind}}

    @staticmethod
    def of(message: dict[str, Any]) -> Identity | None:
        metadata = message.get("metadata") or {}
        payload = metadata.get("event_payload") or {}
        if metadata.get("event_type") != METADATA_EVENT or not payload.get("run"):
            return None
        return Identity(str(payload["run"]), str(payload.get("kind", "")),
                        str(payload.get("step") or ""), int(payload.get("attempt") or 0))


@dataclass
class ThreadContents:
    """What a read of the thread found: our messages by identity, files by (name, title)."""

    messages: dict[Identity, str] = field(default_factory=dict)
    files: set[tuple[str, str]] = field(default_factory=set)

    def add(self, message: dict[str, Any]) -> None:
        identity = Identity.of(message)
        if identity is not None and identity not in self.messages:
            self.messages[identity] = str(message["ts"])
        for shared in message.get("files") or []:
            self.files.add((str(shared.get("name", "")), str(shared.get("title", ""))))


class ThreadReader:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def thread(self, channel: str, thread_ts: str) -> ThreadContents:
        contents = ThreadContents()
        cursor: str | None = None
        while True:
            answer = await self.client.conversations_replies(
                channel=channel, ts=thread_ts, include_all_metadata=True, limit=PAGE,
                cursor=cursor)
            for message in answer.get("messages") or []:
                contents.add(message)
            cursor = (answer.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor or not answer.get("has_more", True):
                return contents

    async def channel_roots(self, channel: str) -> ThreadContents:
        """The channel's newest root messages (newest first: a run's root is among the last
        posted; one page is enough)."""
        contents = ThreadContents()
        answer = await self.client.conversations_history(
            channel=channel, include_all_metadata=True, limit=PAGE)
        for message in answer.get("messages") or []:
            contents.add(message)
        return contents


def permalink(channel: str, ts: str) -> str:
    """A link to a message that works without an API call (chat.getPermalink's format)."""
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"
