"""Serve an aiohttp app on a free loopback port (never a fixed one)."""

from __future__ import annotations

from aiohttp import web


async def serve_on_free_port(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
