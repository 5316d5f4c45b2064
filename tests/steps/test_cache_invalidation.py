"""Step 4 clears the service's Redis caches of old hashes: on the machine's real Redis, and with
the sandbox api caching sessions the way the real service does (cache-aside, ownership decided
from the cached hash)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from bot.domain.step_protocol import StepError
from bot.settings import Settings
from bot.urls import libpq_url
from steps.cache_invalidation import invalidate_old_hashes, stale_entry_count
from steps.rotate_keys import RotateKeysStep
from steps.service_key import KeyModelRotation
from tests.fixtures.sandbox import SandboxSeed
from tests.steps.sandbox_settings import sandbox_settings
from tests.steps.service_api import get, local_service_api
from tests.steps.step_context import settings_for, step_context


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cache_settings(redis_url: str, prefix: str, **more: object) -> Settings:
    return settings_for(redis_url=redis_url, cache_session_pattern=f"{prefix}session:*",
                        cache_owner_key=f"{prefix}session:owner:{{hash}}", **more)


async def test_only_entries_holding_an_old_hash_go_in_batches(
    redis_url: str, cache_prefix: str, redis_client: aioredis.Redis,
) -> None:
    p = cache_prefix
    old = [sha(f"old{n}") for n in range(3)]
    new, other = sha("new"), sha("someone else, not rotated")
    for n in range(25):  # more than a batch of sessions of each kind
        await redis_client.set(f"{p}session:o{n}", json.dumps(
            {"id": f"o{n}", "owner_api_key_hash": old[n % 3]}), ex=3600)
        await redis_client.set(f"{p}session:n{n}", json.dumps(
            {"id": f"n{n}", "owner_api_key_hash": new}), ex=3600)
    await redis_client.set(f"{p}session:x", json.dumps({"owner_api_key_hash": other}))
    await redis_client.set(f"{p}session:broken", "{not json")
    await redis_client.set(f"{p}session_lock:o1", "held")
    for h in (*old, new):
        await redis_client.sadd(f"{p}session:owner:{h}", "o1")
    settings = cache_settings(redis_url, p, cache_batch=4)
    lines: list[str] = []

    facts = await invalidate_old_hashes(settings, old, lines.append)

    assert facts["owner_keys_removed"] == 3 and facts["sessions_removed"] == 25
    assert facts["remaining"] == 0 and facts["passes"] == 1
    assert facts["keys_scanned"] == 25 + 25 + 2 + 1  # owner indexes of old hashes went first
    left = {k async for k in redis_client.scan_iter(match=f"{p}*")}
    assert left == {*(f"{p}session:n{n}" for n in range(25)), f"{p}session:x",
                    f"{p}session:broken", f"{p}session_lock:o1", f"{p}session:owner:{new}"}
    assert await stale_entry_count(settings, old) == 0
    assert "3 owner indexes" in lines[0] and "25 cached sessions" in lines[0]
    assert redis_url.split("@")[-1].split("/")[0] in facts["redis"]


async def test_without_redis_url_nothing_is_touched_and_the_plan_says_so(
    phase2_target_url: str, tmp_path: Path,
) -> None:
    settings = sandbox_settings(phase2_target_url, tmp_path)
    assert settings.redis_url is None
    lines: list[str] = []
    assert await invalidate_old_hashes(settings, ["a" * 64], lines.append) == {
        "skipped": "REDIS_URL is empty"}
    assert lines == ["Redis cache: skipped (REDIS_URL is empty)"]
    plan = await KeyModelRotation(RotateKeysStep()).plan(step_context(settings))
    assert any("Redis cache: skipped (REDIS_URL is empty)" in d for d in plan.details)
    assert plan.facts["redis"] is False


async def test_an_unreachable_redis_fails_the_step_in_one_sentence(tmp_path: Path) -> None:
    settings = settings_for(redis_url="redis://:s3cret@127.0.0.1:1/0")
    with pytest.raises(StepError, match=re.escape("cannot reach Redis at redis://127.0.0.1:1/0")
                       ) as err:
        await invalidate_old_hashes(settings, ["a" * 64], lambda line: None)
    assert "s3cret" not in str(err.value)


async def _session_ids(url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        rows = await conn.fetch("SELECT owner_api_key_hash h, array_agg(id::text) ids "
                                "FROM sessions GROUP BY 1")
    finally:
        await conn.close()
    return {r["h"]: list(r["ids"]) for r in rows}


async def _new_keys(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        rows = await conn.fetch("SELECT DISTINCT owner_api_key_hash h, owner_api_key k "
                                "FROM sessions")
    finally:
        await conn.close()
    return {r["h"]: r["k"] for r in rows}


async def test_a_stale_cache_refuses_the_new_key_until_step_4_clears_it(
    phase2_target_url: str, sandbox_seed: SandboxSeed, redis_url: str, cache_prefix: str,
    tmp_path: Path,
) -> None:
    """The service caches sessions as its clients read them; the rotation rewrites the hashes
    underneath. Without invalidation the cached hash decides: the new key gets 404 for its own
    session and the old key is still let in on the cached owner index. After step 4's
    invalidation the new key is let in and the old one refused."""
    url = phase2_target_url
    client = sandbox_seed.result.clients[0]
    async with local_service_api(tmp_path / "api", url, redis_url=redis_url,
                                 cache_prefix=cache_prefix) as api:
        for seeded in sandbox_seed.result.clients:  # clients at work: the cache fills
            assert (await get(api.base_url, "/api/v1/sessions", seeded.key))[0] == 200
            for sid in seeded.session_ids:
                assert (await get(api.base_url, f"/api/v1/sessions/{sid}", seeded.key))[0] == 200
        settings = sandbox_settings(url, tmp_path, redis_url=redis_url,
                                    cache_session_pattern=f"{cache_prefix}session:*",
                                    cache_owner_key=f"{cache_prefix}session:owner:{{hash}}")
        ctx = step_context(settings)
        await RotateKeysStep().run(ctx, lambda line: None)  # the rows only
        mapping = await ctx.rotations.mapping(ctx.run_id)
        new_key = (await _new_keys(url))[mapping[client.key_hash]]
        session = f"/api/v1/sessions/{client.session_ids[0]}"

        assert (await get(api.base_url, session, new_key))[0] == 404, "refused from the cache"
        status, listed = await get(api.base_url, "/api/v1/sessions", client.key)
        assert status == 200, "the old key is still let in by the cached owner index"
        assert await stale_entry_count(settings, mapping) == 6 * 3 + 6
        check = await KeyModelRotation(RotateKeysStep()).check(ctx)
        assert not check.done and "Redis entries still hold old hashes" in check.reason

        lines: list[str] = []
        outcome = await KeyModelRotation(RotateKeysStep()).run(ctx, lines.append)

        assert outcome.facts["cache"]["owner_keys_removed"] == 6
        assert outcome.facts["cache"]["sessions_removed"] == 18
        assert "6 owner indexes and 18 cached sessions removed" in outcome.summary
        status, body = await get(api.base_url, session, new_key)
        assert status == 200 and body["id"] == client.session_ids[0]
        status, listed = await get(api.base_url, "/api/v1/sessions", new_key)
        assert status == 200 and listed["total"] == 3
        assert (await get(api.base_url, "/api/v1/sessions", client.key))[0] == 401
        assert (await get(api.base_url, session, client.key))[0] == 404
        assert await stale_entry_count(settings, mapping) == 0
        assert (await KeyModelRotation(RotateKeysStep()).check(ctx)).done
