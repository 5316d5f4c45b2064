"""A stand-in api for the restart-script test: GET /health answers with this process's id."""

from __future__ import annotations

import os

from aiohttp import web


async def health(request: web.Request) -> web.Response:
    return web.json_response({"pid": os.getpid()})


if __name__ == "__main__":
    app = web.Application()
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)
