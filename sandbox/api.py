"""The sandbox API: `GET /api/v1/sessions` with `X-API-Key`, Phase 2 or Phase 3 code.

The phase is read at startup from `$SANDBOX_CODE_DIR/PHASE` (what restoring the code changes),
or `SANDBOX_PHASE`. Phase 2 code reads the `metadata` column, Phase 3 code `session_metadata`,
so each fails against the other's schema, like the real thing. Logs are structlog-like JSON
lines on stdout: one `request` line per request and the real service's ownership-check failures
(`ownership_check_failed`, `ownership_check_failed_missing_hash`); never a key or a full hash.

Two modes of the real service, each switched on by its environment:
- door key (`API_KEY`, or `SANDBOX_ENV_FILE` naming a dotenv that holds it, read at start):
  every request but `/health` must carry that one key (401 otherwise), and only then are rows
  filtered by the key's hash; a key that passes the door but owns nothing sees an empty list.
  Without it, a key owning no row is refused (the runbook's key per client).
- Redis cache (`REDIS_URL`): sessions cached cache-aside under the service's own keys
  (`sandbox.cache`), and ownership decided from the cached hash when there is one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from bot.urls import libpq_url, password_of
from sandbox.cache import SessionCache, cached_form
from sandbox.door import PUBLIC_PATHS, door_refusal, read_door_key

PHASE_KEY = web.AppKey("phase", int)
POOL_KEY = web.AppKey("pool", asyncpg.Pool)
DOOR_KEY = web.AppKey("door", str)  # "" when the sandbox has no door
CACHE_KEY = web.AppKey("cache", SessionCache)
DATABASE_URL_KEY = web.AppKey("database_url", str)
PAGE_SIZE = 50
METADATA_COLUMN = {2: "metadata", 3: "session_metadata"}  # 0c6d1a600bb1 renamed it
SESSION_COLUMNS = "id::text AS id, status, model, created_at, owner_api_key_hash, {meta} AS meta"


def log(event: str, **fields: Any) -> None:
    line = {"event": event, **fields, "timestamp": datetime.now(UTC).isoformat()}
    sys.stdout.write(json.dumps(line, default=str) + "\n")
    sys.stdout.flush()


def read_phase() -> int:
    if os.environ.get("SANDBOX_PHASE"):
        return int(os.environ["SANDBOX_PHASE"])
    code_dir = os.environ.get("SANDBOX_CODE_DIR")
    if code_dir and (Path(code_dir) / "PHASE").exists():
        return int((Path(code_dir) / "PHASE").read_text().strip())
    return 3


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def session_json(row: asyncpg.Record) -> dict[str, Any]:
    meta = row["meta"]
    return {"id": row["id"], "status": row["status"], "model": row["model"],
            "created_at": row["created_at"].isoformat(),
            "metadata": json.loads(meta) if isinstance(meta, str) else meta}


def select_sessions(phase: int, where: str) -> str:
    columns = SESSION_COLUMNS.format(meta=METADATA_COLUMN[phase])
    return f"SELECT {columns} FROM sessions WHERE {where}"


OWNS_SQL = ("SELECT EXISTS (SELECT 1 FROM sessions WHERE owner_api_key_hash = $1) OR "
            "EXISTS (SELECT 1 FROM assistants WHERE owner_api_key_hash = $1)")


async def list_sessions(request: web.Request) -> web.Response:
    key = request.headers.get("X-API-Key", "")
    if not key:
        return error(401, "AUTHENTICATION_ERROR", "Missing API key")
    key_hash = sha256_hex(key)
    phase = request.app[PHASE_KEY]
    cache = request.app.get(CACHE_KEY)
    # A cached owner index vouches for the owner (as the service's cache-aside reads do); the
    # rows themselves are listed from the database, since an index may hold only some of them.
    vouched = bool(cache) and await cache.owns(key_hash)  # type: ignore[union-attr]
    async with request.app[POOL_KEY].acquire() as conn:
        if not (request.app[DOOR_KEY] or vouched) and not await conn.fetchval(OWNS_SQL,
                                                                            key_hash):
            log("ownership_check_failed", key_hash_prefix=key_hash[:8], has_request_key=True,
                path=request.path)
            return error(401, "AUTHENTICATION_ERROR", "Invalid API key")
        total = await conn.fetchval(
            "SELECT count(*) FROM sessions WHERE owner_api_key_hash = $1", key_hash)
        rows = await conn.fetch(
            select_sessions(phase, "owner_api_key_hash = $1") + f" ORDER BY created_at, id "
            f"LIMIT {PAGE_SIZE}", key_hash)
    if cache:
        for row in rows:
            await cache.cache_session(cached_form(row))
    return web.json_response({"sessions": [session_json(r) for r in rows], "total": total,
                              "page": 1, "page_size": PAGE_SIZE})


def _public(cached: dict[str, Any]) -> dict[str, Any]:
    return {"id": cached.get("id"), "status": cached.get("status"), "model": cached.get("model"),
            "created_at": cached.get("created_at"), "metadata": cached.get("session_metadata")}


async def get_session(request: web.Request) -> web.Response:
    """One session, checked like the real service: the row's hash against the key's hash —
    the cached row's, when the cache holds it."""
    key = request.headers.get("X-API-Key", "")
    if not key:
        return error(401, "AUTHENTICATION_ERROR", "Missing API key")
    session_id = request.match_info["session_id"]
    not_found = error(404, "SESSION_NOT_FOUND", f"Session {session_id} not found")
    cache = request.app.get(CACHE_KEY)
    found = await cache.get_session(session_id) if cache else None
    if found is None:
        async with request.app[POOL_KEY].acquire() as conn:
            try:
                row = await conn.fetchrow(
                    select_sessions(request.app[PHASE_KEY], "id = $1::uuid"), session_id)
            except asyncpg.DataError:  # not a uuid
                return not_found
        if row is None:
            return not_found
        found = cached_form(row)
        if cache:
            await cache.cache_session(found)
    if not found.get("owner_api_key_hash"):
        log("ownership_check_failed_missing_hash", session_id=session_id,
            has_session_hash=False, has_request_key=True)
        return not_found
    key_hash = sha256_hex(key)
    if found["owner_api_key_hash"] != key_hash:
        log("ownership_check_failed", session_id=session_id, key_hash_prefix=key_hash[:8],
            has_session_hash=True, has_request_key=True)
        return not_found
    return web.json_response(_public(found))


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "phase": request.app[PHASE_KEY]})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def door(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The service's auth middleware: one key for every request but the public paths."""
    if request.path not in PUBLIC_PATHS and request.method != "OPTIONS":
        refusal = door_refusal(request.app[DOOR_KEY] or None,
                               request.headers.get("X-API-Key", ""))
        if refusal is not None:
            return error(401, "AUTHENTICATION_ERROR", refusal)
    return await handler(request)


@web.middleware
async def request_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One `request` line per request; a schema mismatch becomes a logged 500."""
    started = time.monotonic()
    try:
        response = await handler(request)
    except asyncpg.PostgresError as exc:
        log("database_error", path=request.path, error_class=type(exc).__name__,
            error=str(exc))
        response = error(500, "INTERNAL_ERROR", "database error")
    log("request", method=request.method, path=request.path, status=response.status,
        duration_ms=round((time.monotonic() - started) * 1000, 1))
    return response


async def _pool(app: web.Application) -> AsyncIterator[None]:
    url = app[DATABASE_URL_KEY]
    app[POOL_KEY] = await asyncpg.create_pool(libpq_url(url), password=password_of(url),
                                              min_size=1, max_size=5)
    cache = SessionCache.from_environment()
    if cache is not None:
        app[CACHE_KEY] = cache
    yield
    await app[POOL_KEY].close()
    if cache is not None:
        await cache.close()


def build_app(phase: int | None = None, database_url: str | None = None) -> web.Application:
    """The api; the target database from `DATABASE_URL` unless given (a test serving it)."""
    app = web.Application(middlewares=[request_log, door])
    app[DATABASE_URL_KEY] = database_url or os.environ["DATABASE_URL"]
    app[PHASE_KEY] = read_phase() if phase is None else phase
    app[DOOR_KEY] = read_door_key() or ""
    app.cleanup_ctx.append(_pool)
    app.router.add_get("/health", health)
    app.router.add_get("/api/v1/sessions", list_sessions)
    app.router.add_get("/api/v1/sessions/{session_id}", get_session)
    return app


def main() -> None:
    app = build_app()
    port = int(os.environ.get("PORT", "54000"))
    log("startup", phase=app[PHASE_KEY], port=port, door_key=bool(app[DOOR_KEY]),
        cache=bool(os.environ.get("REDIS_URL")))
    web.run_app(app, host=os.environ.get("HOST", "127.0.0.1"), port=port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
