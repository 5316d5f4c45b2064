"""The Web API methods the fake answers, each refusing what Slack's reference says it refuses.

A method takes the fake and the call's arguments and returns the answer's fields (`ok` is added
by the server), or raises `SlackError`. Error codes are Slack's documented ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.slackwire.block_kit import MESSAGE_TEXT, message_block_errors, units, view_errors
from tests.slackwire.workspace import (
    APP_ID,
    BOT_ID,
    BOT_USER,
    TEAM_DOMAIN,
    TEAM_ID,
    Message,
    SlackError,
)

if TYPE_CHECKING:
    from tests.slackwire.fake_web_api import FakeSlack

TRIGGER_SECONDS = 3.0

Method = Callable[["FakeSlack", dict[str, Any]], dict[str, Any]]
METHODS: dict[str, Method] = {}


def method(name: str) -> Callable[[Method], Method]:
    def register(fn: Method) -> Method:
        METHODS[name] = fn
        return fn
    return register


def _json_arg(args: dict[str, Any], key: str) -> Any:
    value = args.get(key)
    if isinstance(value, str) and value:
        try:
            return json.loads(value)
        except ValueError:
            raise SlackError("invalid_arguments" if key == "view" else
                             f"invalid_{key}_format") from None
    return value


def _flag(args: dict[str, Any], key: str) -> bool:
    return str(args.get(key, "")).lower() in ("1", "true")


def _content(args: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The text and blocks of a message, refused as Slack refuses them."""
    text = args.get("text") or ""
    blocks = _json_arg(args, "blocks")
    if not text and not blocks:
        raise SlackError("no_text")
    if units(text) > MESSAGE_TEXT:
        raise SlackError("msg_too_long")
    if blocks is not None:
        errors = message_block_errors(blocks)
        if errors:
            raise SlackError("invalid_blocks", errors=errors,
                             response_metadata={"messages": [f"[ERROR] {e}" for e in errors]})
    return text, blocks or []


def _metadata(args: dict[str, Any]) -> dict[str, Any] | None:
    metadata = _json_arg(args, "metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("event_type"), str) \
            or not isinstance(metadata.get("event_payload"), dict):
        raise SlackError("invalid_metadata_format")
    return metadata


@method("auth.test")
def auth_test(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    return {"url": f"https://{TEAM_DOMAIN}.slack.com/", "team": "Acme", "user": "rollback-bot",
            "team_id": TEAM_ID, "user_id": BOT_USER, "bot_id": BOT_ID}


@method("chat.postMessage")
def post_message(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    ws = fake.workspace
    opens_im(fake, args)
    channel = ws.writable(args.get("channel"))
    thread_ts = args.get("thread_ts") or None
    parent = ws.thread_parent(channel, thread_ts) if thread_ts else None
    text, blocks = _content(args)
    if not text:
        fake.lint.append(f"chat.postMessage without a fallback text: {blocks!r:.200}")
    message = Message(channel.id, fake.next_ts(), thread_ts, text, blocks,
                      metadata=_metadata(args))
    ws.messages[message.ts] = message
    if parent is not None:
        parent.reply_count += 1
    return {"channel": channel.id, "ts": message.ts, "message": message.as_slack(True)}


@method("chat.update")
def update(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    ws = fake.workspace
    channel = ws.visible(args.get("channel"))
    if channel.archived:
        raise SlackError("is_archived")
    message = ws.message(channel, args.get("ts"))
    if message.user != BOT_USER:
        raise SlackError("cant_update_message")
    text, blocks = _content(args)
    if not text:
        fake.lint.append(f"chat.update without a fallback text: {blocks!r:.200}")
    changed = {b.get("block_id"): b for b in blocks if b.get("block_id")}
    for old in message.blocks:
        new = changed.get(old.get("block_id"))
        if new is not None and new != old:
            # Slack's reference: "If a message is updated, use a new block_id."
            fake.lint.append(f"chat.update kept block_id {old['block_id']!r} for new content")
    message.text, message.blocks = text, blocks
    if "metadata" in args:
        message.metadata = _metadata(args)
    message.updates += 1
    return {"channel": channel.id, "ts": message.ts, "text": text,
            "message": message.as_slack(True)}


@method("chat.delete")
def delete(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    ws = fake.workspace
    channel = ws.visible(args.get("channel"))
    message = ws.message(channel, args.get("ts"))
    if message.user != BOT_USER:
        raise SlackError("cant_delete_message")
    ws.delete_message(message.ts)
    return {"channel": channel.id, "ts": message.ts}


@method("chat.postEphemeral")
def post_ephemeral(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    ws = fake.workspace
    channel = ws.writable(args.get("channel"))
    if args.get("user") not in channel.members:
        raise SlackError("user_not_in_channel")
    _content(args)
    ts = fake.next_ts()
    fake.ephemeral.append({**args, "channel": channel.id, "message_ts": ts})
    return {"message_ts": ts}


@method("chat.getPermalink")
def get_permalink(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    ws = fake.workspace
    channel = ws.visible(args.get("channel"))
    message = ws.message(channel, args.get("message_ts"))
    link = f"https://{TEAM_DOMAIN}.slack.com/archives/{channel.id}/p{message.ts.replace('.', '')}"
    if message.thread_ts:
        link += f"?thread_ts={message.thread_ts}&cid={channel.id}"
    return {"channel": channel.id, "permalink": link}


@method("conversations.replies")
def replies(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    ws = fake.workspace
    channel = ws.visible(args.get("channel"))
    ts = args.get("ts")
    parent = ws.messages.get(ts) or ws.tombstones.get(ts)  # type: ignore[arg-type]
    if parent is None or parent.channel != channel.id:
        raise SlackError("thread_not_found")
    with_metadata = _flag(args, "include_all_metadata")
    thread_ts = parent.thread_ts or parent.ts
    head = ws.messages.get(thread_ts)
    if head is None:
        shown_head = {"type": "message", "subtype": "tombstone", "ts": thread_ts,
                      "text": "This message was deleted.", "thread_ts": thread_ts}
    else:
        shown_head = head.as_slack(with_metadata)
    thread = sorted((m for m in ws.messages.values()
                     if m.channel == channel.id and m.thread_ts == thread_ts and m.ts != thread_ts),
                    key=lambda m: m.ts)
    limit = int(args.get("limit") or 1000)
    listed = sorted([*((m.ts, m.as_slack(with_metadata)) for m in thread),
                     *shared_files(fake, channel.id, thread_ts)], key=lambda t: t[0])
    shown = [shown_head, *(m for _, m in listed)][:limit]
    return {"messages": shown, "has_more": False,
            "response_metadata": {"next_cursor": ""}}


@method("conversations.history")
def history(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    """The channel's root messages, newest first (added for the mirror's root look-up)."""
    ws = fake.workspace
    channel = ws.visible(args.get("channel"))
    oldest = float(args.get("oldest") or 0)
    with_metadata = _flag(args, "include_all_metadata")
    roots = sorted((m for m in ws.messages.values() if m.channel == channel.id
                    and (not m.thread_ts or m.thread_ts == m.ts) and float(m.ts) >= oldest),
                   key=lambda m: m.ts, reverse=True)
    limit = int(args.get("limit") or 100)
    return {"messages": [m.as_slack(with_metadata) for m in roots[:limit]],
            "has_more": len(roots) > limit, "response_metadata": {"next_cursor": ""}}


@method("conversations.info")
def conversation_info(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    return {"channel": fake.workspace.visible(args.get("channel")).info(BOT_USER)}


def _view(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    view = _json_arg(args, "view")
    errors = view_errors(view)
    if errors:
        raise SlackError("invalid_arguments",
                         response_metadata={"messages": [f"[ERROR] {e}" for e in errors]})
    assert isinstance(view, dict)
    return view


@method("views.open")
def views_open(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    trigger = args.get("trigger_id")
    issued = fake.triggers.get(trigger) if isinstance(trigger, str) else None
    if issued is None:
        raise SlackError("invalid_trigger_id")
    if trigger in fake.used_triggers:
        raise SlackError("exchanged_trigger_id")
    if time.monotonic() - issued > TRIGGER_SECONDS:
        raise SlackError("expired_trigger_id")
    view = _view(fake, args)
    fake.used_triggers.add(trigger)  # type: ignore[arg-type]
    view_id = f"V{len(fake.views) + 1:06d}"
    fake.views[view_id] = shown = {**view, "id": view_id, "hash": f"{view_id}.1",
                                   "state": {"values": {}}}
    return {"view": shown}


@method("views.update")
def views_update(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    view_id = args.get("view_id")
    if not view_id:
        external = args.get("external_id")
        view_id = next((v["id"] for v in fake.views.values()
                        if external and v.get("external_id") == external), None)
    current = fake.views.get(view_id) if isinstance(view_id, str) else None
    if current is None:
        raise SlackError("not_found")
    if args.get("hash") and args["hash"] != current["hash"]:
        raise SlackError("hash_conflict")
    view = _view(fake, args)
    version = int(current["hash"].rsplit(".", 1)[1]) + 1
    fake.views[current["id"]] = shown = {**view, "id": current["id"],
                                         "hash": f"{current['id']}.{version}",
                                         "state": {"values": {}}}
    return {"view": shown}


@method("usergroups.users.list")
def usergroup_users(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    group = args.get("usergroup")
    if group not in fake.workspace.usergroups:
        raise SlackError("no_such_subteam")
    return {"users": list(fake.workspace.usergroups[group])}


@method("users.info")
def users_info(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    user = args.get("user")
    if not isinstance(user, str) or not user.startswith(("U", "W")):
        raise SlackError("user_not_found")
    name = fake.workspace.users.get(user, user.lower())
    return {"user": {"id": user, "name": name, "real_name": name, "team_id": TEAM_ID}}


@method("files.getUploadURLExternal")
def upload_url(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    if not args.get("filename") or not str(args.get("length", "")).isdigit():
        raise SlackError("invalid_arguments")
    file_id = f"F{len(fake.uploads) + 1:06d}"
    fake.uploads[file_id] = {"filename": args["filename"], "content": "", "length":
                             int(args["length"]), "uploaded": False}
    return {"upload_url": f"{fake.root_url}upload/{file_id}", "file_id": file_id}


@method("files.completeUploadExternal")
def complete_upload(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    files = _json_arg(args, "files")
    if not isinstance(files, list) or not files:
        raise SlackError("invalid_arguments")
    ws = fake.workspace
    channel_id = args.get("channel_id")
    channel = ws.writable(channel_id) if channel_id else None
    if channel is not None and args.get("thread_ts"):
        ws.thread_parent(channel, args["thread_ts"])
    for f in files:
        upload = fake.uploads.get(f.get("id"))
        if upload is None or not upload["uploaded"]:
            raise SlackError("file_not_found")
    for f in files:
        fake.uploads[f["id"]].update(title=f.get("title"), channel=channel_id,
                                     thread_ts=args.get("thread_ts"),
                                     initial_comment=args.get("initial_comment"))
        fake.uploads[f["id"]]["share_ts"] = fake.next_ts()
    return {"files": [{"id": f["id"], "title": f.get("title")} for f in files]}


@method("apps.connections.open")
def connections_open(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    if not fake.socket_url:
        raise SlackError("invalid_auth")
    return {"url": fake.socket_url}


def opens_im(fake: FakeSlack, args: dict[str, Any]) -> None:
    """chat.postMessage to a user's id posts in the app's direct message with that user,
    opening it if need be (added for the mirror, which tells an initiator there)."""
    user = args.get("channel")
    ws = fake.workspace
    if isinstance(user, str) and user.startswith(("U", "W")) and user not in ws.channels:
        dm = f"D_BOT_{user}"
        if dm not in ws.channels:
            ws.add_channel(dm, "directmessage", user, kind="im", bot=True)
        args["channel"] = dm


def shared_files(fake: FakeSlack, channel: str, thread_ts: str
                 ) -> list[tuple[str, dict[str, Any]]]:
    """Files shared into a thread, as the thread's messages Slack lists them among (added for
    the mirror, which recognises an upload it already made by the file's name and title)."""
    return [(u["share_ts"], {"type": "message", "ts": u["share_ts"], "thread_ts": thread_ts,
                             "user": u.get("user", BOT_USER), "text": "",
                             **({"bot_id": BOT_ID, "app_id": APP_ID}
                                if u.get("user", BOT_USER) == BOT_USER else {}),
                             "files": [{"id": file_id, "name": u.get("filename"),
                                        "title": u.get("title"),
                                        "user": u.get("user", BOT_USER)}]})
            for file_id, u in fake.uploads.items()
            if u.get("share_ts") and u.get("channel") == channel
            and u.get("thread_ts") == thread_ts]


# Methods that change the workspace: a "lost answer" fault applies them, then answers 500.
WRITES = frozenset({"chat.postMessage", "chat.update", "chat.delete", "chat.postEphemeral",
                    "views.open", "views.update", "files.completeUploadExternal"})
