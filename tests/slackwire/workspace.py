"""What the fake Slack workspace holds: channels (who is in them, archived or not), messages
(with their metadata), users. Tests change it the way people would: delete a message, archive
a channel, remove the bot from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BOT_USER, BOT_ID, TEAM_ID, TEAM_DOMAIN = "UBOT", "BBOT", "T1", "acme"
APP_ID = "A1"  # the app's id, as slash commands and clicks carry it (`api_app_id`)


class SlackError(Exception):
    """A Web API answer `{"ok": false, "error": code, **extra}` (HTTP 200, as Slack does)."""

    def __init__(self, code: str, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.extra = extra


@dataclass
class Channel:
    id: str
    name: str
    kind: str = "public"  # public | private | im | mpim
    members: set[str] = field(default_factory=set)
    archived: bool = False

    def info(self, viewer: str) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "is_channel": self.kind == "public",
                "is_private": self.kind in ("private", "im", "mpim"), "is_im": self.kind == "im",
                "is_archived": self.archived, "is_member": viewer in self.members}


@dataclass
class Message:
    channel: str
    ts: str
    thread_ts: str | None
    text: str
    blocks: list[dict[str, Any]]
    updates: int = 0
    user: str = BOT_USER
    metadata: dict[str, Any] | None = None
    reply_count: int = 0
    # Who posted it, as Slack shows it: our bot's messages carry its bot_id and app_id;
    # another app's carry theirs (set both to forge one), a person's neither.
    bot_id: str | None = None
    app_id: str | None = None

    def as_slack(self, with_metadata: bool) -> dict[str, Any]:
        shown: dict[str, Any] = {"type": "message", "ts": self.ts, "text": self.text,
                                 "user": self.user, "blocks": self.blocks}
        if self.bot_id is not None or self.user == BOT_USER:
            shown["bot_id"] = self.bot_id or BOT_ID
            shown["app_id"] = self.app_id or APP_ID
        if self.thread_ts:
            shown["thread_ts"] = self.thread_ts
        if self.reply_count:
            shown["reply_count"] = self.reply_count
        if with_metadata and self.metadata is not None:
            shown["metadata"] = self.metadata
        return shown


@dataclass
class Workspace:
    channels: dict[str, Channel] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)  # ts -> message (live ones)
    deleted: dict[str, Message] = field(default_factory=dict)
    tombstones: dict[str, Message] = field(default_factory=dict)  # deleted parents with replies
    users: dict[str, str] = field(default_factory=dict)  # id -> name
    usergroups: dict[str, list[str]] = field(default_factory=dict)

    # --- what tests do to the workspace ------------------------------------------------------

    def add_channel(self, channel_id: str, name: str, *members: str, kind: str = "public",
                    bot: bool = False) -> Channel:
        channel = Channel(channel_id, name, kind, set(members) | ({BOT_USER} if bot else set()))
        self.channels[channel_id] = channel
        return channel

    def add_dm(self, user: str, other: str) -> Channel:
        """A direct message between two people: the bot is not in it."""
        return self.add_channel(f"D_{user}_{other}", "directmessage", user, other, kind="im")

    def archive(self, channel_id: str) -> None:
        self.channels[channel_id].archived = True

    def remove_bot(self, channel_id: str) -> None:
        self.channels[channel_id].members.discard(BOT_USER)

    def delete_message(self, ts: str) -> Message:
        """Delete a message as a person with the rights to would (an admin, in the client)."""
        message = self.messages.pop(ts)
        self.deleted[ts] = message
        if message.reply_count:  # Slack keeps "This message was deleted." atop its thread
            self.tombstones[ts] = message
        if message.thread_ts and message.thread_ts in self.messages:
            self.messages[message.thread_ts].reply_count -= 1
        return message

    # --- what Slack checks --------------------------------------------------------------------

    def resolve(self, channel: Any) -> Channel:
        """A channel by id, or by name (`#name` or `name`), as chat.postMessage accepts."""
        if not isinstance(channel, str) or not channel:
            raise SlackError("channel_not_found")
        if channel in self.channels:
            return self.channels[channel]
        name = channel.lstrip("#")
        for candidate in self.channels.values():
            if candidate.name == name and candidate.kind in ("public", "private"):
                return candidate
        raise SlackError("channel_not_found")

    def visible(self, channel: Any) -> Channel:
        """A channel the bot can see: private ones and DMs only if it is a member."""
        found = self.resolve(channel)
        if found.kind != "public" and BOT_USER not in found.members:
            raise SlackError("channel_not_found")
        return found

    def writable(self, channel: Any) -> Channel:
        found = self.visible(channel)
        if found.archived:
            raise SlackError("is_archived")
        if BOT_USER not in found.members:
            raise SlackError("not_in_channel")
        return found

    def message(self, channel: Channel, ts: Any) -> Message:
        message = self.messages.get(ts) if isinstance(ts, str) else None
        if message is None or message.channel != channel.id:
            raise SlackError("message_not_found")
        return message

    def thread_parent(self, channel: Channel, thread_ts: Any) -> Message:
        """The parent a reply goes under: a live message, or the tombstone of a deleted one
        that had replies. (Assumption, not documented by Slack: a reply to a ts with no such
        parent is refused as `thread_not_found`.)"""
        parent = self.messages.get(thread_ts) or self.tombstones.get(thread_ts)
        if parent is None or parent.channel != channel.id:
            raise SlackError("thread_not_found")
        return parent
