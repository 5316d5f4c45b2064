"""The sandbox api's Redis cache, keyed as the real service keys it (its SessionCacheManager).

`session:{id}` holds the session as JSON, its `owner_api_key_hash` included; `session:owner:{hash}`
is the set of that owner's session ids, its TTL refreshed on every write. Reads are cache-aside:
the cache first, the database on a miss, and what was read is cached. So after the hashes change
in the database, a cached entry still decides ownership with the OLD hash until it expires
(`REDIS_SESSION_TTL`, an hour by default) — the staleness the rollback must clear.

`SANDBOX_CACHE_PREFIX` puts every key under a prefix, so parallel tests share one Redis.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from bot.urls import libpq_url, password_of

DEFAULT_TTL = 3600


@dataclass
class SessionCache:
    client: aioredis.Redis
    prefix: str = ""
    ttl: int = DEFAULT_TTL

    @classmethod
    def from_environment(cls) -> SessionCache | None:
        url = os.environ.get("REDIS_URL", "")
        if not url:
            return None
        return cls(aioredis.from_url(url, decode_responses=True),
                   os.environ.get("SANDBOX_CACHE_PREFIX", ""),
                   int(os.environ.get("REDIS_SESSION_TTL", str(DEFAULT_TTL))))

    def session_key(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    def owner_key(self, key_hash: str) -> str:
        return f"{self.prefix}session:owner:{key_hash}"

    async def cache_session(self, session: dict[str, Any]) -> None:
        """As the service's `cache_session`: the JSON with a TTL, then the owner index."""
        await self.client.set(self.session_key(session["id"]), json.dumps(session, default=str),
                              ex=self.ttl)
        owner = session.get("owner_api_key_hash")
        if owner:
            await self.client.sadd(self.owner_key(owner), session["id"])
            await self.client.expire(self.owner_key(owner), self.ttl)

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        raw = await self.client.get(self.session_key(session_id))
        if not raw:
            return None
        try:
            parsed = json.loads(raw)
        except ValueError:
            await self.client.delete(self.session_key(session_id))
            return None
        return parsed if isinstance(parsed, dict) else None

    async def owns(self, key_hash: str) -> bool:
        """Whether the owner index of this hash is cached (it then vouches for the owner)."""
        return bool(await self.client.exists(self.owner_key(key_hash)))

    async def close(self) -> None:
        await self.client.aclose()


def cached_form(row: asyncpg.Record | dict[str, Any], meta_column: str = "meta") -> dict[str, Any]:
    """A session row as the service caches it (the hash is part of the payload)."""
    meta = row[meta_column]
    return {"id": str(row["id"]), "model": row["model"], "status": row["status"],
            "created_at": row["created_at"].isoformat(),
            "owner_api_key_hash": row["owner_api_key_hash"],
            "session_metadata": json.loads(meta) if isinstance(meta, str) else meta}


async def warm_cache(database_url: str, redis_url: str, prefix: str = "",
                     ttl: int = DEFAULT_TTL) -> int:
    """Cache every owned session as the service does once its clients have read them (the
    state of a busy service's Redis when the rollback starts). Returns how many."""
    conn = await asyncpg.connect(libpq_url(database_url), password=password_of(database_url))
    try:
        column = "session_metadata" if await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'sessions' "
            "AND column_name = 'session_metadata'") else "metadata"
        rows = await conn.fetch(
            f"SELECT id, model, status, created_at, owner_api_key_hash, {column} AS meta "
            "FROM sessions WHERE owner_api_key_hash IS NOT NULL")
    finally:
        await conn.close()
    cache = SessionCache(aioredis.from_url(redis_url, decode_responses=True), prefix, ttl)
    try:
        for row in rows:
            await cache.cache_session(cached_form(row))
    finally:
        await cache.close()
    return len(rows)
