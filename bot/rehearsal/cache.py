"""The rehearsal's Redis: the machine's own when one answers, under a prefix of this rehearsal.

The sandbox api caches sessions there as the real service does, and the cache is warmed before
the rollback (as a busy service's is), so step 4's invalidation has real work. Without a Redis
the rehearsal runs without the cache and says so.
"""

from __future__ import annotations

import os

import redis.asyncio as aioredis
from redis.exceptions import RedisError

LOCAL_REDIS = "redis://127.0.0.1:6379/0"


async def reachable_redis() -> str | None:
    """`SANDBOX_REDIS_URL`, else the local server, if it answers PING."""
    url = os.environ.get("SANDBOX_REDIS_URL") or LOCAL_REDIS
    client = aioredis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.ping()
    except (RedisError, OSError):
        return None
    finally:
        await client.aclose()
    return url


async def remove_prefix(url: str, prefix: str) -> None:
    client = aioredis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        for first in range(0, len(keys), 500):
            await client.unlink(*keys[first:first + 500])
    finally:
        await client.aclose()


def cache_settings(url: str, prefix: str) -> dict[str, object]:
    """The bot's settings for the sandbox's cache: the service's key names under the prefix."""
    from pydantic import SecretStr

    return {"redis_url": SecretStr(url), "cache_session_pattern": f"{prefix}session:*",
            "cache_owner_key": f"{prefix}session:owner:{{hash}}"}
