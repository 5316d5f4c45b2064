"""The sandbox API: `GET /api/v1/sessions` with `X-API-Key`, Phase 2 or Phase 3 code.

The phase is read at startup from `$SANDBOX_CODE_DIR/PHASE` (what restoring the code changes),
or `SANDBOX_PHASE`. Phase 2 code reads the `metadata` column, Phase 3 code `session_metadata`,
so each fails against the other's schema, like the real thing. Logs are structlog-like JSON
lines on stdout; only failures of the ownership check are logged, never a key or a full hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from bot.db.urls import libpq_url, password_of

PHASE_KEY = web.AppKey("phase", int)
POOL_KEY = web.AppKey("pool", asyncpg.Pool)

SESSIONS_SQL = {
    2: "SELECT id::text, status, model, metadata AS meta FROM sessions "
       "WHERE owner_api_key_hash = $1 ORDER BY created_at, id LIMIT 50",
    3: "SELECT id::text, status, model, session_metadata AS meta FROM sessions "
       "WHERE owner_api_key_hash = $1 ORDER BY created_at, id LIMIT 50",
}
OWNS_SQL = ("SELECT EXISTS (SELECT 1 FROM sessions WHERE owner_api_key_hash = $1) OR "
            "EXISTS (SELECT 1 FROM assistants WHERE owner_api_key_hash = $1)")


def log(event: str, **fields: Any) -> None:
    line = {"event": event, "timestamp": datetime.now(UTC).isoformat(), **fields}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def read_phase() -> int:
    if os.environ.get("SANDBOX_PHASE"):
        return int(os.environ["SANDBOX_PHASE"])
    code_dir = os.environ.get("SANDBOX_CODE_DIR")
    if code_dir and (Path(code_dir) / "PHASE").exists():
        return int((Path(code_dir) / "PHASE").read_text().strip())
    return 3


def unauthorised(message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": "AUTHENTICATION_ERROR", "message": message}}, status=401)


async def list_sessions(request: web.Request) -> web.Response:
    key = request.headers.get("X-API-Key", "")
    if not key:
        log("ownership_check_failed_missing_hash", path=request.path)
        return unauthorised("Missing API key")
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    pool = request.app[POOL_KEY]
    async with pool.acquire() as conn:
        if not await conn.fetchval(OWNS_SQL, key_hash):
            log("ownership_check_failed", key_hash_prefix=key_hash[:8], path=request.path)
            return unauthorised("Invalid API key")
        try:
            rows = await conn.fetch(SESSIONS_SQL[request.app[PHASE_KEY]], key_hash)
        except asyncpg.UndefinedColumnError as exc:
            log("database_error", error=str(exc))
            return web.json_response({"error": {"code": "INTERNAL_ERROR",
                                                "message": "schema mismatch"}}, status=500)
    sessions = [{"id": r["id"], "status": r["status"], "model": r["model"]} for r in rows]
    log("request", path=request.path, status=200, key_hash_prefix=key_hash[:8])
    return web.json_response({"sessions": sessions, "total": len(sessions), "page": 1,
                              "page_size": 50})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "phase": request.app[PHASE_KEY]})


async def _pool(app: web.Application) -> Any:
    url = os.environ["DATABASE_URL"]
    app[POOL_KEY] = await asyncpg.create_pool(libpq_url(url), password=password_of(url),
                                              min_size=1, max_size=5)
    yield
    await app[POOL_KEY].close()


def build_app() -> web.Application:
    app = web.Application()
    app[PHASE_KEY] = read_phase()
    app.cleanup_ctx.append(_pool)
    app.router.add_get("/health", health)
    app.router.add_get("/api/v1/sessions", list_sessions)
    return app


def main() -> None:
    app = build_app()
    port = int(os.environ.get("PORT", "54000"))
    log("startup", phase=app[PHASE_KEY], port=port)
    web.run_app(app, host=os.environ.get("HOST", "127.0.0.1"), port=port, print=None)


if __name__ == "__main__":
    main()
