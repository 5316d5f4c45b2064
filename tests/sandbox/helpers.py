"""Small helpers shared by the sandbox tests: one SQL round trip, one HTTP GET."""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg

from bot.urls import libpq_url


async def fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def get(url: str, key: str | None = None) -> tuple[int, Any]:
    headers = {"X-API-Key": key} if key else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as answer:
        return answer.status, await answer.json()


async def give_key(url: str, session_id: str, key: str) -> None:
    """What key rotation does for one row: Phase 2 code finds it by the new key's hash."""
    await fetch(url, "UPDATE sessions SET owner_api_key_hash = encode(sha256($1::bytea), 'hex') "
                     "WHERE id = $2::uuid", key.encode(), session_id)
