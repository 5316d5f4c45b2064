"""A local stand-in for Slack's Web API, as strict as Slack's reference, that records every call.

It refuses what Slack refuses (methods.py: a channel the bot is not in, an archived channel, a
deleted message, an expired `trigger_id`, blocks outside Block Kit's limits (block_kit.py), a
revoked token, a scope the app was not granted (scopes.py)), serves the `response_url`s and
`trigger_id`s it hands out with each request (requests.py asks the running fake for them), and
can be told to misbehave: answer 429/500 N times, answer with a permanent error N times, or
apply a write and then answer 500 (the answer is lost, the write is not).

Arguments are read from the query string, form bodies and JSON bodies alike. The bot starts in
#oncall-engineering (`C_ONCALL`) with the three engineers; other channels are added by tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.slackwire import wire
from tests.slackwire.methods import METHODS, WRITES
from tests.slackwire.scopes import METHOD_SCOPES, scopes_for
from tests.slackwire.serve import serve_on_free_port
from tests.slackwire.workspace import Message, SlackError, Workspace

__all__ = ["FakeSlack", "Message", "RecordedCall", "start_fake_slack"]

RESPONSE_URL_USES, RESPONSE_URL_SECONDS = 5, 30 * 60


@dataclass
class RecordedCall:
    method: str
    args: dict[str, Any]
    at: float
    error: str | None = None  # the error Slack answered with (None: ok)


@dataclass
class Fault:
    status: int
    times: int
    retry_after: int = 1
    error: str = ""  # a permanent error answered with HTTP 200 (status 200)
    lose_answer: bool = False  # apply the write, then answer `status`


@dataclass
class ResponsePost:
    """One reply posted to a request's `response_url` (what Bolt's `respond` sends)."""

    url_id: str
    body: dict[str, Any]
    at: float

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))


@dataclass
class ResponseUrl:
    user: str
    channel: str
    issued: float
    uses: int = 0


def default_workspace() -> Workspace:
    workspace = Workspace()
    workspace.add_channel("C_ONCALL", "oncall-engineering", "U_ALICE", "U_BOB", "U_CAROL",
                          bot=True)
    workspace.add_channel("C_RANDOM", "random", "U_ALICE", "U_BOB", "U_CAROL", "U_MALLORY")
    return workspace


@dataclass
class FakeSlack:
    calls: list[RecordedCall] = field(default_factory=list)
    workspace: Workspace = field(default_factory=default_workspace)
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    held: dict[str, asyncio.Event] = field(default_factory=dict)
    triggers: dict[str, float] = field(default_factory=dict)  # trigger_id -> issued at
    used_triggers: set[str] = field(default_factory=set)
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    response_urls: dict[str, ResponseUrl] = field(default_factory=dict)
    responses: list[ResponsePost] = field(default_factory=list)
    ephemeral: list[dict[str, Any]] = field(default_factory=list)
    lint: list[str] = field(default_factory=list)  # what Slack accepts but advises against
    granted_scopes: set[str] | None = None  # None: every scope in scopes.py
    revoked_tokens: set[str] = field(default_factory=set)
    socket_url: str = ""
    url: str = ""  # the Web API base: http://127.0.0.1:port/api/
    root_url: str = ""  # http://127.0.0.1:port/api/ (uploads live under it too)
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    # --- compatibility views of the workspace --------------------------------------------------

    @property
    def messages(self) -> dict[str, Message]:
        return self.workspace.messages

    @property
    def usergroups(self) -> dict[str, list[str]]:
        return self.workspace.usergroups

    # --- programming the fake ------------------------------------------------------------------

    def fail_next(self, method: str, status: int = 429, times: int = 1,
                  retry_after: int = 1) -> None:
        """Answer HTTP `status` (429 with Retry-After, or a 5xx) the next `times` calls."""
        self.faults[method] = Fault(status, times, retry_after)

    def refuse_next(self, method: str, error: str, times: int = 1) -> None:
        """Answer `{"ok": false, "error": error}` the next `times` calls, changing nothing."""
        self.faults[method] = Fault(200, times, error=error)

    def lose_answer(self, method: str, times: int = 1, status: int = 500) -> None:
        """Apply the next `times` calls, then answer HTTP `status`: the write happened, the
        caller cannot know it."""
        self.faults[method] = Fault(status, times, lose_answer=True)

    def hold(self, method: str) -> asyncio.Event:
        """Calls to `method` are recorded, then left unanswered until the event is set."""
        self.held[method] = asyncio.Event()
        return self.held[method]

    def revoke_token(self, token: str) -> None:
        self.revoked_tokens.add(token)

    def issue_trigger(self) -> str:
        """A trigger_id as Slack puts in a request it sends now: one views.open within 3 s."""
        trigger = f"{int(time.time())}.{next(self._ts)}.{uuid.uuid4().hex[:16]}"
        self.triggers[trigger] = time.monotonic()
        return trigger

    def restamp_trigger(self, trigger: str) -> None:
        """The request carrying `trigger` reaches the app now (the 3 s count from here)."""
        if trigger in self.triggers:
            self.triggers[trigger] = time.monotonic()

    def issue_response_url(self, user: str, channel: str) -> str:
        url_id = uuid.uuid4().hex
        self.response_urls[url_id] = ResponseUrl(user, channel, time.monotonic())
        return f"{self.root_url}response/{url_id}"

    # --- reading what happened -----------------------------------------------------------------

    def calls_to(self, method: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method]

    def methods_called(self) -> set[str]:
        """Every Web API method called (not the response_url posts)."""
        return {c.method for c in self.calls if c.method != "response_url"}

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        return sorted((m for m in self.messages.values()
                       if m.channel == channel and m.thread_ts == thread_ts),
                      key=lambda m: m.ts)

    def roots(self, channel: str) -> list[Message]:
        return [m for m in self.messages.values() if m.channel == channel and not m.thread_ts]

    def replies_to(self, user: str) -> list[str]:
        """Every text `user` was shown privately: response_url replies and ephemerals."""
        seen = [(r.at, r.text) for r in self.responses
                if self.response_urls[r.url_id].user == user]
        seen += [(0.0, str(e.get("text", ""))) for e in self.ephemeral if e.get("user") == user]
        return [text for _, text in sorted(seen, key=lambda s: s[0])]

    def all_text(self) -> str:
        """Every argument of every call, every reply and every uploaded byte: for scans."""
        recorded = json.dumps([c.args for c in self.calls], default=str)
        recorded += json.dumps([r.body for r in self.responses], default=str)
        return recorded + "".join(u.get("content", "") for u in self.uploads.values())

    async def wait_for(self, predicate: Callable[[], Any], within: float = 30.0) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            await asyncio.sleep(0.05)
        raise AssertionError(f"condition not met within {within} s")

    def next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    # --- the server -----------------------------------------------------------------------------

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.can_read_body:
            args.update(dict(await request.post()))
        for key in ("blocks", "view", "metadata"):  # recorded decoded, for tests to read
            if isinstance(args.get(key), str) and args[key]:
                with contextlib.suppress(ValueError):
                    args[key] = json.loads(args[key])
        return args

    def _authorise(self, method: str, request: web.Request, args: dict[str, Any]) -> None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() or str(args.get("token") or "")
        if not token:
            raise SlackError("not_authed")
        if token in self.revoked_tokens:
            raise SlackError("token_revoked")
        wanted = "xapp-" if method == "apps.connections.open" else "xoxb-"
        if not token.startswith(wanted):
            raise SlackError("invalid_auth")
        if method not in METHOD_SCOPES:
            raise SlackError("unknown_method")
        if self.granted_scopes is None:
            return
        kind = "public"
        channel = args.get("channel") or args.get("channel_id")
        if channel:
            with contextlib.suppress(SlackError):
                kind = self.workspace.resolve(channel).kind
        needed = scopes_for(method, kind)
        if needed and not set(needed) & self.granted_scopes:
            raise SlackError("missing_scope", needed=",".join(needed),
                             provided=",".join(sorted(self.granted_scopes)))

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        call = RecordedCall(method, args, time.monotonic())
        self.calls.append(call)
        if method in self.held:
            await self.held[method].wait()
        fault = self.faults.get(method)
        if fault and fault.times > 0 and not fault.lose_answer:
            fault.times -= 1
            if fault.error:
                call.error = fault.error
                return web.json_response({"ok": False, "error": fault.error})
            headers = {"Retry-After": str(fault.retry_after)} if fault.status == 429 else {}
            call.error = "ratelimited" if fault.status == 429 else "internal_error"
            return web.json_response({"ok": False, "error": call.error},
                                     status=fault.status, headers=headers)
        try:
            self._authorise(method, request, args)
            answer = METHODS[method](self, args)
        except SlackError as refused:
            call.error = refused.code
            return web.json_response({"ok": False, "error": refused.code, **refused.extra})
        if fault and fault.times > 0 and fault.lose_answer and method in WRITES:
            fault.times -= 1
            call.error = "lost_answer"
            return web.json_response({"ok": False, "error": "internal_error"},
                                     status=fault.status)
        return web.json_response({"ok": True, **answer})

    async def upload(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["file_id"])
        if upload is None:
            return web.Response(status=404, text="file_not_found")
        raw = await request.read()
        upload["raw"] = raw  # a picture's bytes; "content" is the text of a text file
        upload["content"] = raw.decode("utf-8", errors="replace")
        upload["uploaded"] = True
        return web.Response(text="OK - " + str(len(raw)))

    async def respond(self, request: web.Request) -> web.Response:
        """A request's `response_url`: up to 5 replies within 30 minutes, as Slack allows.
        `hold("response_url")` and `fail_next("response_url", status)` apply here too."""
        url_id = request.match_info["url_id"]
        self.calls.append(RecordedCall("response_url", {"url_id": url_id}, time.monotonic()))
        if "response_url" in self.held:
            await self.held["response_url"].wait()
        fault = self.faults.get("response_url")
        if fault and fault.times > 0:
            fault.times -= 1
            return web.Response(status=fault.status, text="internal_error")
        issued = self.response_urls.get(url_id)
        if issued is None:
            return web.Response(status=404, text="invalid_token")
        if time.monotonic() - issued.issued > RESPONSE_URL_SECONDS:
            return web.Response(status=404, text="expired_url")
        if issued.uses >= RESPONSE_URL_USES:
            return web.Response(status=404, text="used_url")
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not body.get("text") and not body.get("blocks") and not body.get("delete_original"):
            return web.Response(status=400, text="no_text")
        issued.uses += 1
        self.responses.append(ResponsePost(url_id, body, time.monotonic()))
        return web.Response(text="ok")


async def start_fake_slack() -> tuple[FakeSlack, web.AppRunner]:
    fake = FakeSlack()
    app = web.Application(client_max_size=256 * 1024 * 1024)  # Slack takes files far larger
    app.router.add_post("/api/upload/{file_id}", fake.upload)
    app.router.add_post("/api/response/{url_id}", fake.respond)
    app.router.add_route("*", "/api/{method}", fake.handle)
    runner, port = await serve_on_free_port(app)
    fake.url = fake.root_url = f"http://127.0.0.1:{port}/api/"
    wire.current = fake
    return fake, runner
