"""A local Socket Mode endpoint: says hello, pushes envelopes, records the client's acks."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.slackwire.serve import serve_on_free_port


@dataclass
class SocketModeServer:
    url: str = ""
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "connection_info": {"app_id": "A1"}})
        self.connected.set()
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                ack = json.loads(message.data)
                if "envelope_id" in ack:
                    self.acks[ack["envelope_id"]] = ack
        return ws

    async def push(self, kind: str, payload: dict[str, Any]) -> str:
        envelope_id = str(uuid.uuid4())
        await self.sockets[-1].send_json({"envelope_id": envelope_id, "type": kind,
                                          "payload": payload, "accepts_response_payload": True,
                                          "retry_attempt": 0, "retry_reason": ""})
        return envelope_id


async def start_socket_mode_server() -> tuple[SocketModeServer, web.AppRunner]:
    server = SocketModeServer()
    app = web.Application()
    app.router.add_get("/link", server.handle)
    runner, port = await serve_on_free_port(app)
    server.url = f"ws://127.0.0.1:{port}/link"
    return server, runner
