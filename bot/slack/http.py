"""HTTP transport: `POST /slack/events`, signatures verified by Bolt.

Bolt parses any form body that contains the text "payload" as an interactive payload, so a slash
command whose reason mentions "payload" would arrive empty. We re-parse such bodies here; the
signature is still checked against the raw bytes.

`GET /health` is liveness (the process answers); `GET /ready` is readiness: 503 with the reason
while `ready` names one (draining, the schema behind), 200 otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest

EVENTS_PATH = "/slack/events"
READY_PATH = "/ready"
Refusal = Callable[[], Awaitable[str | None]]  # why not ready, or None


def to_bolt_request(raw_body: str, query: str, headers: dict[str, str]) -> AsyncBoltRequest:
    request = AsyncBoltRequest(body=raw_body, query=query, headers=headers)  # type: ignore[arg-type]
    if not request.body and "payload" in raw_body:
        form = dict(parse_qsl(raw_body, keep_blank_values=True))
        if "command" in form and "payload" not in form:
            request.body = form
            request.context = build_async_context(AsyncBoltContext({}), form)
    return request


def build_web_app(app: AsyncApp, ready: Refusal | None = None) -> web.Application:
    async def events(request: web.Request) -> web.Response:
        bolt_request = to_bolt_request(
            await request.text(), request.query_string, dict(request.headers)
        )
        return await to_aiohttp_response(await app.async_dispatch(bolt_request))

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readiness(_: web.Request) -> web.Response:
        refusal = await ready() if ready is not None else None
        if refusal is not None:
            return web.json_response({"status": "not ready", "reason": refusal}, status=503)
        return web.json_response({"status": "ready"})

    web_app = web.Application()
    web_app.router.add_post(EVENTS_PATH, events)
    web_app.router.add_get("/health", health)
    web_app.router.add_get(READY_PATH, readiness)
    return web_app
