"""The Redis fixture: a real server, keys under the test's own prefix, removed after."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.fixtures.redis import delete_prefixed


async def test_keys_under_the_prefix_are_removed_and_no_others(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await redis_client.set(f"{redis_prefix}session:1", "old-hash", ex=60)
    await redis_client.set(f"{redis_prefix}session:owner:2", "old-hash", ex=60)
    await redis_client.set(f"{redis_prefix}x-other", "kept", ex=60)  # the fixture removes it
    assert await redis_client.get(f"{redis_prefix}session:1") == "old-hash"
    assert await delete_prefixed(redis_client, f"{redis_prefix}session:") == 2
    assert await redis_client.get(f"{redis_prefix}x-other") == "kept"
