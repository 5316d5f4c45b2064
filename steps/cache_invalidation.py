"""The service's Redis caches forget the old hashes, once step 4 has rewritten them.

The real service caches `session:{id}` (JSON holding `owner_api_key_hash`) and
`session:owner:{hash}` (the owner's session ids) for up to `REDIS_SESSION_TTL`, an hour by
default, and decides ownership from the cache when it holds the session. After the rotation
those entries still carry the old hashes: the new key is refused from the cache (and in
per-client mode the old key still sees its sessions) until they expire. So every owner index of
an old hash is unlinked, and every cached session whose JSON carries an old hash, found by
`SCAN` in batches (never `KEYS`, which blocks the server) and removed with `UNLINK` (freed in
the background). Deleting a fresh entry is harmless: the service reads the row again.

A pass that still finds old hashes afterwards (a request in flight re-cached one) is followed by
another, up to MAX_PASSES; what remains is reported. Key names and patterns are settings
(`CACHE_SESSION_PATTERN`, `CACHE_OWNER_KEY`, `CACHE_HASH_FIELD`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.domain.step_protocol import OutputSink, StepError
from bot.settings import Settings

MAX_PASSES = 3
TIMEOUT_SECONDS = 10.0


def redis_where(settings: Settings) -> str:
    """REDIS_URL as it may be shown: host, port and database, never a password."""
    if settings.redis_url is None:
        return "(REDIS_URL empty)"
    parts = urlsplit(settings.redis_url.get_secret_value())
    host = parts.hostname or "localhost"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def owner_keys(settings: Settings, old_hashes: Collection[str]) -> list[str]:
    return [settings.cache_owner_key.replace("{hash}", h) for h in sorted(old_hashes)]


def plan_lines(settings: Settings) -> list[str]:
    if settings.redis_url is None:
        return ["Redis cache: skipped (REDIS_URL is empty); if the service caches sessions, "
                "entries with old hashes refuse the new keys until they expire"]
    return [f"Redis cache at {redis_where(settings)}: UNLINK "
            f"{settings.cache_owner_key} of every old hash, and SCAN "
            f"{settings.cache_session_pattern} for entries whose {settings.cache_hash_field} is "
            f"an old hash ({settings.cache_batch} keys per round trip)"]


@asynccontextmanager
async def connect_redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    assert settings.redis_url is not None
    client = aioredis.from_url(settings.redis_url.get_secret_value(),
                               socket_timeout=TIMEOUT_SECONDS,
                               socket_connect_timeout=TIMEOUT_SECONDS)
    try:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            raise StepError(f"cannot reach Redis at {redis_where(settings)}: "
                            f"{type(exc).__name__}: {exc}") from None
        yield client
    finally:
        await client.aclose()


def _holds_old_hash(raw: bytes | str | None, field: str, old: Collection[str]) -> bool:
    if raw is None:  # gone meanwhile, or not a string (an owner index matched the pattern)
        return False
    try:
        payload = json.loads(raw)
    except ValueError:
        return False
    return isinstance(payload, dict) and payload.get(field) in old


async def stale_sessions(client: aioredis.Redis, settings: Settings,
                         old: Collection[str]) -> AsyncIterator[tuple[int, list[bytes]]]:
    """Batches of (keys scanned, keys among them whose session JSON holds an old hash)."""
    batch: list[bytes] = []

    async def judge(keys: list[bytes]) -> list[bytes]:
        values = await client.mget(keys)
        return [k for k, v in zip(keys, values, strict=True)
                if _holds_old_hash(v, settings.cache_hash_field, old)]

    async for key in client.scan_iter(match=settings.cache_session_pattern,
                                      count=settings.cache_batch):
        batch.append(key)
        if len(batch) >= settings.cache_batch:
            yield len(batch), await judge(batch)
            batch = []
    if batch:
        yield len(batch), await judge(batch)


async def _one_pass(client: aioredis.Redis, settings: Settings,
                    old: Collection[str]) -> dict[str, int]:
    removed_owner = 0
    names = owner_keys(settings, old)
    for first in range(0, len(names), settings.cache_batch):
        removed_owner += int(await client.unlink(*names[first:first + settings.cache_batch]))
    scanned = removed_sessions = 0
    async for seen, stale in stale_sessions(client, settings, old):
        scanned += seen
        if stale:
            removed_sessions += int(await client.unlink(*stale))
    return {"owner_keys": removed_owner, "scanned": scanned, "sessions": removed_sessions}


async def remaining(client: aioredis.Redis, settings: Settings, old: Collection[str]) -> int:
    """Entries that still hold an old hash: owner indexes of old hashes, cached sessions."""
    names = owner_keys(settings, old)
    count = 0
    for first in range(0, len(names), settings.cache_batch):
        count += int(await client.exists(*names[first:first + settings.cache_batch]))
    async for _, stale in stale_sessions(client, settings, old):
        count += len(stale)
    return count


async def invalidate_old_hashes(settings: Settings, old_hashes: Collection[str],
                                emit: OutputSink) -> dict[str, Any]:
    """Remove every cache entry holding an old hash; the counts, for the step's facts."""
    if settings.redis_url is None:
        emit("Redis cache: skipped (REDIS_URL is empty)")
        return {"skipped": "REDIS_URL is empty"}
    old = frozenset(old_hashes)
    if not old:
        emit("Redis cache: no old hash recorded, nothing to remove")
        return {"redis": redis_where(settings), "owner_keys_removed": 0,
                "sessions_removed": 0, "keys_scanned": 0, "passes": 0, "remaining": 0}
    totals = {"owner_keys": 0, "scanned": 0, "sessions": 0}
    passes = left = 0
    try:
        async with connect_redis(settings) as client:
            while passes < MAX_PASSES:
                passes += 1
                counts = await _one_pass(client, settings, old)
                for name, value in counts.items():
                    totals[name] += value
                emit(f"Redis cache pass {passes}: {counts['owner_keys']:,} owner indexes "
                     f"({settings.cache_owner_key}) and {counts['sessions']:,} cached sessions "
                     f"with an old hash removed, of {counts['scanned']:,} keys scanned")
                left = await remaining(client, settings, old)
                if not left:
                    break
    except RedisError as exc:
        raise StepError(f"Redis at {redis_where(settings)} failed during the cache "
                        f"invalidation: {type(exc).__name__}: {exc} (Retry runs it again; "
                        f"removing entries twice is harmless)") from None
    if left:
        raise StepError(f"{left:,} cache entries still hold an old hash after {passes} passes "
                        f"(is something re-caching them?): Retry runs the invalidation again")
    return {"redis": redis_where(settings), "owner_keys_removed": totals["owner_keys"],
            "sessions_removed": totals["sessions"], "keys_scanned": totals["scanned"],
            "passes": passes, "remaining": 0}


async def stale_entry_count(settings: Settings, old_hashes: Collection[str]) -> int | None:
    """For a step's `check`: entries still holding an old hash (None without REDIS_URL)."""
    if settings.redis_url is None:
        return None
    async with connect_redis(settings) as client:
        try:
            return await remaining(client, settings, frozenset(old_hashes))
        except RedisError as exc:
            raise StepError(f"Redis at {redis_where(settings)}: {type(exc).__name__}") from None
