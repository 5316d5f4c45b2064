"""What anyone would check on the sandbox once a rollback finished, in either key model: every
new key passes the door and sees every row of its client, every old key is refused, no cache
entry holds an old hash, and every contact got the one key that works, once."""

from __future__ import annotations

import email
import email.policy
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage

import aiohttp
import asyncpg

from bot.settings import KeyModel, Settings
from bot.urls import libpq_url
from steps.cache_invalidation import stale_entry_count


@dataclass(frozen=True)
class NewKeys:
    by_hash: dict[str, str]  # new hash -> new key
    sessions: dict[str, int]  # new hash -> sessions it owns


async def new_keys(target_url: str) -> NewKeys:
    conn = await asyncpg.connect(libpq_url(target_url))
    try:
        rows = await conn.fetch(
            "SELECT owner_api_key_hash h, owner_api_key k FROM sessions UNION "
            "SELECT owner_api_key_hash, owner_api_key FROM assistants")
        counts = await conn.fetch("SELECT owner_api_key_hash h, count(*) n FROM sessions "
                                  "GROUP BY 1")
    finally:
        await conn.close()
    return NewKeys({r["h"]: r["k"] for r in rows}, {r["h"]: r["n"] for r in counts})


async def status_and_total(base_url: str, key: str) -> tuple[int, int | None]:
    async with aiohttp.ClientSession() as http, http.get(
            f"{base_url}/api/v1/sessions", headers={"X-API-Key": key}) as answer:
        body = await answer.json(content_type=None)
        return answer.status, body.get("total") if isinstance(body, dict) else None


async def assert_rolled_back(settings: Settings, old_keys: Iterable[str],
                             messages: Iterable[EmailMessage],
                             contacts: Iterable[str]) -> NewKeys:
    """`contacts`: every address listed in the directory; `messages`: every email sent."""
    keys = await new_keys(settings.target_database_url.get_secret_value())
    assert None not in keys.by_hash.values(), "every owned row holds a new key"
    for key_hash, key in keys.by_hash.items():
        assert hashlib.sha256(key.encode()).hexdigest() == key_hash
        assert await status_and_total(settings.api_base_url, key) == (
            200, keys.sessions.get(key_hash, 0)), "the new key passes and sees every row"
    olds = set(old_keys)
    for old in olds:
        status, _ = await status_and_total(settings.api_base_url, old)
        assert status == 401, "an old key is refused"
    if settings.key_model is KeyModel.SERVICE:
        assert len(keys.by_hash) == 1, "one door key"
    if settings.redis_url is not None:
        old_hashes = {hashlib.sha256(k.encode()).hexdigest() for k in olds}
        assert await stale_entry_count(settings, old_hashes) == 0, "no cache entry is stale"
    mailed: dict[str, list[str]] = {}
    for message in messages:
        body = message.get_content() if message.is_multipart() is False else ""
        found = [k for k in keys.by_hash.values() if k in body]
        assert len(found) == 1, "each email carries one new key"
        mailed.setdefault(str(message["To"]), []).append(found[0])
    assert sorted(mailed) == sorted(contacts), "every contact was mailed"
    for address, got in mailed.items():
        assert len(got) == 1, f"{address} was mailed once"
    if settings.key_model is KeyModel.SERVICE:
        assert {k for got in mailed.values() for k in got} == set(keys.by_hash.values())
    return keys


def outbox_messages(settings: Settings) -> list[EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for p in sorted(settings.outbox_dir.glob("*.eml"))]
