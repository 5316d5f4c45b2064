"""A local stand-in for Slack's Web API that records every call, as bolt-python's tests do.

Arguments are read from the query string, form bodies and JSON bodies alike. Faults (429 with
Retry-After, 5xx) can be programmed per method.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.slackwire.serve import serve_on_free_port


@dataclass
class RecordedCall:
    method: str
    args: dict[str, Any]
    at: float


@dataclass
class Message:
    channel: str
    ts: str
    thread_ts: str | None
    text: str
    blocks: list[dict[str, Any]]
    updates: int = 0
    metadata: dict[str, Any] | None = None
    files: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Fault:
    status: int
    times: int
    retry_after: int = 1


@dataclass
class AppliedFault:
    """Apply the call, then answer `status` anyway: `times` per distinct `per(args)`."""

    status: int
    times: int
    per: Callable[[dict[str, Any]], str]
    seen: dict[str, int] = field(default_factory=dict)

    def strikes(self, args: dict[str, Any]) -> bool:
        key = self.per(args)
        self.seen[key] = self.seen.get(key, 0) + 1
        return self.seen[key] <= self.times


def message_identity(args: dict[str, Any]) -> str:
    """A post's identity: its metadata when it has some, else its channel and text."""
    metadata = args.get("metadata")
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    if metadata:
        return json.dumps(metadata, sort_keys=True)
    return f"{args.get('channel')}:{args.get('text')}"


@dataclass
class FakeSlack:
    calls: list[RecordedCall] = field(default_factory=list)
    messages: dict[str, Message] = field(default_factory=dict)
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    held: dict[str, asyncio.Event] = field(default_factory=dict)
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    # --- added by the mirror's tests (thread reads, file shares, faults after applying) ---
    shares: dict[str, Message] = field(default_factory=dict)  # ts -> file share in a thread
    applied_faults: dict[str, AppliedFault] = field(default_factory=dict)
    socket_url: str = ""
    url: str = ""
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    def fail_next(self, method: str, status: int = 429, times: int = 1,
                  retry_after: int = 1) -> None:
        self.faults[method] = Fault(status, times, retry_after)

    def hold(self, method: str) -> asyncio.Event:
        """Calls to `method` are recorded, then left unanswered until the event is set."""
        self.held[method] = asyncio.Event()
        return self.held[method]

    def calls_to(self, method: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method]

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        return [m for m in self.messages.values()
                if m.channel == channel and m.thread_ts == thread_ts]

    def roots(self, channel: str) -> list[Message]:
        return [m for m in self.messages.values() if m.channel == channel and not m.thread_ts]

    def all_text(self) -> str:
        """Every argument of every call, and every uploaded byte: for secret scans."""
        recorded = json.dumps([c.args for c in self.calls], default=str)
        return recorded + "".join(u.get("content", "") for u in self.uploads.values())

    async def wait_for(self, predicate: Callable[[], Any], within: float = 30.0) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            await asyncio.sleep(0.05)
        raise AssertionError(f"condition not met within {within} s")

    # --- the server -------------------------------------------------------------------------

    def _next_ts(self) -> str:
        # Seconds as Slack's are (the mirror looks for its roots since a run began), with a
        # counter that keeps every ts distinct and increasing.
        return f"{int(time.time())}.{next(self._ts):06d}"

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.can_read_body:
            args.update(dict(await request.post()))
        for key in ("blocks", "view"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        return args

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        self.calls.append(RecordedCall(method, args, time.monotonic()))
        if method in self.held:
            await self.held[method].wait()
        applied = self.applied_faults.get(method)
        if applied is not None and applied.strikes(args):
            self.answer(method, args)  # Slack took it; only the answer is lost
            return web.json_response({"ok": False, "error": "internal_error"},
                                     status=applied.status)
        fault = self.faults.get(method)
        if fault and fault.times > 0:
            fault.times -= 1
            headers = {"Retry-After": str(fault.retry_after)} if fault.status == 429 else {}
            return web.json_response({"ok": False, "error": "ratelimited" if fault.status == 429
                                      else "internal_error"}, status=fault.status,
                                     headers=headers)
        return web.json_response({"ok": True, **self.answer(method, args)})

    def answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"user_id": "UBOT", "bot_id": "BBOT", "team_id": "T1", "user": "rollback-bot"}
        if method == "chat.postMessage":
            ts = self._next_ts()
            self.messages[ts] = Message(args["channel"], ts, args.get("thread_ts"),
                                        args.get("text", ""), args.get("blocks") or [],
                                        metadata=_metadata(args))
            return {"channel": args["channel"], "ts": ts, "message": {"ts": ts}}
        if method == "chat.update":
            message = self.messages[args["ts"]]
            message.text, message.blocks = args.get("text", ""), args.get("blocks") or []
            message.updates += 1
            return {"channel": args["channel"], "ts": args["ts"]}
        if method == "chat.postEphemeral":
            return {"message_ts": self._next_ts()}
        if method in ("views.open", "views.update"):
            return {"view": {"id": "V1", **(args.get("view") or {})}}
        if method == "usergroups.users.list":
            return {"users": self.usergroups.get(args.get("usergroup", ""), [])}
        if method == "users.info":
            return {"user": {"id": args.get("user"), "name": args.get("user")}}
        if method == "files.getUploadURLExternal":
            file_id = f"F{len(self.uploads) + 1}"
            self.uploads[file_id] = {"filename": args.get("filename"), "content": ""}
            return {"upload_url": f"{self.url}upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            files = json.loads(args["files"]) if isinstance(args["files"], str) else args["files"]
            for f in files:
                self.uploads[f["id"]].update(title=f.get("title"), channel=args.get("channel_id"),
                                             thread_ts=args.get("thread_ts"))
            self._share_files(args, files)
            return {"files": [{"id": f["id"], "title": f.get("title")} for f in files]}
        if method == "apps.connections.open":
            return {"url": self.socket_url}
        if method == "conversations.replies":
            return self._conversations_replies(args)
        if method == "conversations.history":
            return self._conversations_history(args)
        return {}

    # --- thread reads and file shares (added by the mirror's tests) ---------------------------

    def fail_after_applying(self, method: str, times: int = 1, status: int = 500,
                            per: Callable[[dict[str, Any]], str] = message_identity) -> None:
        """Each distinct call (by `per`) is applied, then answered `status`, `times` times."""
        self.applied_faults[method] = AppliedFault(status, times, per)

    def _share_files(self, args: dict[str, Any], files: list[dict[str, Any]]) -> None:
        if not args.get("thread_ts"):
            return
        ts = self._next_ts()
        self.shares[ts] = Message(str(args.get("channel_id")), ts, args["thread_ts"], "", [],
                                  files=[{"id": f["id"], "name": self.uploads[f["id"]].get(
                                      "filename"), "title": f.get("title")} for f in files])

    @staticmethod
    def _wire(message: Message, with_metadata: bool) -> dict[str, Any]:
        wire: dict[str, Any] = {"type": "message", "ts": message.ts, "text": message.text,
                                "blocks": message.blocks, "bot_id": "BBOT", "user": "UBOT"}
        if message.thread_ts:
            wire["thread_ts"] = message.thread_ts
        if message.files:
            wire["files"] = message.files
        if with_metadata and message.metadata:
            wire["metadata"] = message.metadata
        return wire

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        root = self.messages.get(str(args.get("ts")))
        if root is None or root.channel != args.get("channel"):
            return {"ok": False, "error": "thread_not_found"}
        replies = [m for m in [*self.messages.values(), *self.shares.values()]
                   if m.channel == root.channel and m.thread_ts == root.ts]
        every = [root, *sorted(replies, key=lambda m: m.ts)]
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        return {"messages": [self._wire(m, with_metadata) for m in every], "has_more": False,
                "response_metadata": {"next_cursor": ""}}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        oldest = float(args.get("oldest") or 0)
        roots = sorted((m for m in self.roots(str(args.get("channel")))
                        if float(m.ts) >= oldest), key=lambda m: m.ts, reverse=True)
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        return {"messages": [self._wire(m, with_metadata) for m in roots], "has_more": False,
                "response_metadata": {"next_cursor": ""}}

    async def upload(self, request: web.Request) -> web.Response:
        self.uploads[request.match_info["file_id"]]["content"] = (await request.read()).decode()
        return web.Response(text="OK")


def _metadata(args: dict[str, Any]) -> dict[str, Any] | None:
    metadata = args.get("metadata")
    return json.loads(metadata) if isinstance(metadata, str) else metadata


async def start_fake_slack() -> tuple[FakeSlack, web.AppRunner]:
    fake = FakeSlack()
    app = web.Application(client_max_size=256 * 1024 * 1024)  # Slack takes files far larger
    app.router.add_post("/api/upload/{file_id}", fake.upload)
    app.router.add_route("*", "/api/{method}", fake.handle)
    runner, port = await serve_on_free_port(app)
    fake.url = f"http://127.0.0.1:{port}/api/"
    return fake, runner
