"""Posts that happen once, even when Slack applies a post and its answer is lost.

Every message the bot posts carries its identity as Slack message metadata
(`event_type: rollback_message`, payload `{run, step, attempt, kind}`). Before posting into a
thread it has not read since it took the run over, or after any post of that run failed or went
unanswered, the writer reads the thread (`conversations.replies`, or the channel's history for
the root, `include_all_metadata=true`) and adopts what it finds instead of posting again.
Uploads are recognised by their file name and title. Only the bot's own are adopted: a
message whose `bot_id` is the bot's (from `auth.test`), a file uploaded by the bot's user; a
message another app or a person posted with the same metadata or file name is not ours, and
the bot posts its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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


@dataclass(frozen=True)
class BotSelf:
    """Who the bot is in Slack (auth.test): its messages carry `bot_id`, its files `user`."""

    bot_id: str
    user_id: str

    def posted(self, message: dict[str, Any]) -> bool:
        return bool(self.bot_id) and message.get("bot_id") == self.bot_id

    def uploaded(self, shared: dict[str, Any], message: dict[str, Any]) -> bool:
        uploader = shared.get("user") or message.get("user")
        return bool(self.user_id) and uploader == self.user_id


@dataclass
class ThreadContents:
    """What a read of the thread found: our messages by identity, files by (name, title)."""

    messages: dict[Identity, str] = field(default_factory=dict)
    files: set[tuple[str, str]] = field(default_factory=set)

    def add(self, message: dict[str, Any], own: BotSelf) -> None:
        identity = Identity.of(message)
        if identity is not None and identity not in self.messages and own.posted(message):
            self.messages[identity] = str(message["ts"])
        for shared in message.get("files") or []:
            if own.uploaded(shared, message):
                self.files.add((str(shared.get("name", "")), str(shared.get("title", ""))))


class ThreadReader:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._self: BotSelf | None = None

    async def own(self) -> BotSelf:
        """The bot's own ids, asked once (auth.test)."""
        if self._self is None:
            answer = await self.client.auth_test()
            self._self = BotSelf(str(answer.get("bot_id") or ""),
                                 str(answer.get("user_id") or ""))
        return self._self

    async def thread(self, channel: str, thread_ts: str) -> ThreadContents:
        contents = ThreadContents()
        own = await self.own()
        async for message in thread_messages(self.client, channel, thread_ts):
            contents.add(message, own)
        return contents

    async def channel_roots(self, channel: str) -> ThreadContents:
        """The channel's newest root messages (newest first: a run's root is among the last
        posted; one page is enough)."""
        contents = ThreadContents()
        own = await self.own()
        answer = await self.client.conversations_history(
            channel=channel, include_all_metadata=True, limit=PAGE)
        for message in answer.get("messages") or []:
            contents.add(message, own)
        return contents


async def thread_messages(client: AsyncWebClient, channel: str, thread_ts: str
                          ) -> AsyncIterator[dict[str, Any]]:
    """Every message of a thread, metadata included, a page of `conversations.replies` at a
    time."""
    cursor: str | None = None
    while True:
        answer = await client.conversations_replies(
            channel=channel, ts=thread_ts, include_all_metadata=True, limit=PAGE, cursor=cursor)
        for message in answer.get("messages") or []:
            yield message
        cursor = (answer.get("response_metadata") or {}).get("next_cursor") or None
        if not cursor or not answer.get("has_more", True):
            return


def permalink(channel: str, ts: str) -> str:
    """A link to a message that works without an API call (chat.getPermalink's format)."""
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"
