"""Step 4 on the sandbox target after the downgrade: one key per client, in batches, resumable."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.ledgers import SqlRotationLedger
from bot.db.urls import libpq_url
from steps.protocol import StepContext, StepError
from steps.rotate_keys import RotateKeysStep
from tests.steps.conftest import (
    add_assistants_only_client,
    keys_by_old_hash,
    memory_context,
    owned_rows,
    sql_context,
)
from tests.steps.sandbox_settings import sandbox_settings

FULL_HASH = re.compile(r"[0-9a-f]{64}")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def assert_one_key_per_client(clients: Mapping[str, set[tuple[str, str | None]]],
                              ledger: Mapping[str, str]) -> set[str]:
    """Every client: one key on all its rows, its sha256 on the hash column, in the ledger."""
    keys: set[str] = set()
    for old_hash, found in clients.items():
        assert len(found) == 1, f"client {old_hash[:8]} has {len(found)} keys"
        ((new_hash, key),) = found
        assert key is not None and hashlib.sha256(key.encode()).hexdigest() == new_hash
        assert new_hash != old_hash and ledger[old_hash] == new_hash
        keys.add(key)
    assert len(keys) == len(clients), "two clients share a key"
    assert len(ledger) == len(clients)
    return keys


def assert_no_secret(text: str, keys: set[str]) -> None:
    leaked = [key[:4] + "..." for key in keys if key in text]
    assert not leaked, f"{len(leaked)} keys leaked"


async def test_one_key_per_client_in_three_batches(
    phase2_target_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path, rotation_batch_size=2))
    step = RotateKeysStep()
    before = await owned_rows(phase2_target_url)
    plan = await step.plan(ctx)
    assert dict(plan.facts) == {"clients": 6, "sessions": 18, "assistants": 6,
                                "batch_size": 2, "key_format": "uuid4"}
    assert plan.details[0] == "6 clients: 18 sessions, 6 assistants"
    assert not (await step.check(ctx)).done

    lines: list[str] = []
    outcome = await step.run(ctx, lines.append)

    assert lines == ["batch 1/3: 2 clients (2/6)", "batch 2/3: 2 clients (4/6)",
                     "batch 3/3: 2 clients (6/6)"]
    assert {k: outcome.facts[k] for k in ("clients_rotated", "batches", "sessions_updated",
                                          "assistants_updated")} == {
        "clients_rotated": 6, "batches": 3, "sessions_updated": 18, "assistants_updated": 6}
    clients = keys_by_old_hash(before, await owned_rows(phase2_target_url))
    keys = assert_one_key_per_client(clients, await ctx.rotations.mapping(ctx.run_id))
    assert all(UUID.match(key) for key in keys)
    check = await step.check(ctx)
    assert check.done, check.reason
    emitted = "\n".join(lines) + outcome.summary + repr(dict(outcome.facts))
    assert not FULL_HASH.search(emitted), "at most hash prefixes in the output"
    assert_no_secret(emitted + caplog.text, keys)


async def test_client_owning_only_assistants_gets_a_token_key(
    phase2_target_url: str, tmp_path: Path,
) -> None:
    only_assistants = await add_assistants_only_client(phase2_target_url, rows=2)
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path, key_format="token"))
    before = await owned_rows(phase2_target_url)
    assert (await RotateKeysStep().plan(ctx)).facts["clients"] == 7
    outcome = await RotateKeysStep().run(ctx, lambda _line: None)
    assert outcome.facts["clients_rotated"] == 7 and outcome.facts["assistants_updated"] == 8
    clients = keys_by_old_hash(before, await owned_rows(phase2_target_url))
    keys = assert_one_key_per_client(clients, await ctx.rotations.mapping(ctx.run_id))
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", key) for key in keys)
    assert len(clients[only_assistants]) == 1


class DyingSink:
    """The bot dies right after the first batch has committed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        raise asyncio.CancelledError


async def test_crash_between_batches_resumes_with_the_rest(
    phase2_target_url: str, tmp_path: Path,
) -> None:
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path, rotation_batch_size=2))
    before = await owned_rows(phase2_target_url)
    sink = DyingSink()
    with pytest.raises(asyncio.CancelledError):
        await RotateKeysStep().run(ctx, sink)
    assert sink.lines == ["batch 1/3: 2 clients (2/6)"]
    assert len(await ctx.rotations.mapping(ctx.run_id)) == 2
    assert not (await RotateKeysStep().check(ctx)).done

    lines: list[str] = []
    outcome = await RotateKeysStep().run(ctx, lines.append)
    assert outcome.facts["clients_rotated"] == 4 and outcome.facts["batches"] == 2
    assert lines == ["batch 1/2: 2 clients (2/4)", "batch 2/2: 2 clients (4/4)"]
    clients = keys_by_old_hash(before, await owned_rows(phase2_target_url))
    assert_one_key_per_client(clients, await ctx.rotations.mapping(ctx.run_id))
    assert (await RotateKeysStep().check(ctx)).done


class LostAfterRecord(SqlRotationLedger):
    """The ledger commits batch 2, then the bot dies before the target commits it."""

    calls = 0

    async def record(self, run_id: str, old_to_new: Mapping[str, str]) -> None:
        await super().record(run_id, old_to_new)
        self.calls += 1
        if self.calls == 2:
            raise ConnectionError("bot died between the two commits")


async def test_crash_between_the_two_commits_is_reconciled_through_the_sql_ledger(
    phase2_target_url: str, tmp_path: Path, bot_db_url: str,
    bot_sessionmaker: async_sessionmaker[AsyncSession], sql_run_id: str,
) -> None:
    settings = sandbox_settings(phase2_target_url, tmp_path, rotation_batch_size=2)
    ctx = sql_context(settings, bot_sessionmaker, sql_run_id)
    dying = StepContext(sql_run_id, settings, LostAfterRecord(bot_sessionmaker),
                        ctx.notifications)
    before = await owned_rows(phase2_target_url)
    with pytest.raises(ConnectionError):
        await RotateKeysStep().run(dying, lambda _line: None)
    # The ledger knows 4 clients; the target committed only 2 of them.
    assert len(await ctx.rotations.mapping(sql_run_id)) == 4

    lines: list[str] = []
    outcome = await RotateKeysStep().run(ctx, lines.append)
    assert lines[0] == "2 ledger entries from an interrupted batch were discarded"
    assert outcome.facts["clients_rotated"] == 4
    clients = keys_by_old_hash(before, await owned_rows(phase2_target_url))
    keys = assert_one_key_per_client(clients, await ctx.rotations.mapping(sql_run_id))
    assert (await RotateKeysStep().check(ctx)).done

    dump = await asyncio.create_subprocess_exec(
        "pg_dump", "--data-only", libpq_url(bot_db_url), stdout=asyncio.subprocess.PIPE)
    bot_db_text = (await dump.communicate())[0].decode()
    assert all(new in bot_db_text for new in (await ctx.rotations.mapping(sql_run_id)).values())
    assert_no_secret(bot_db_text, keys)


async def test_ledger_entry_is_kept_unless_its_batch_provably_rolled_back(
    phase2_target_url: str, tmp_path: Path,
) -> None:
    """A ledger entry whose client has no pending row left is kept (only hashes are compared)."""
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path))
    await RotateKeysStep().run(ctx, lambda _line: None)
    mapping = await ctx.rotations.mapping(ctx.run_id)
    old, new = next(iter(mapping.items()))
    conn = await asyncpg.connect(libpq_url(phase2_target_url))
    try:  # the client's rows vanish (deleted by the service): no longer provably rolled back
        await conn.execute("DELETE FROM assistants WHERE owner_api_key_hash = $1", new)
        await conn.execute("DELETE FROM session_messages WHERE session_id IN"
                           " (SELECT id FROM sessions WHERE owner_api_key_hash = $1)", new)
        await conn.execute("DELETE FROM sessions WHERE owner_api_key_hash = $1", new)
    finally:
        await conn.close()
    outcome = await RotateKeysStep().run(ctx, lambda _line: None)
    assert outcome.facts["clients_rotated"] == 0
    assert (await ctx.rotations.mapping(ctx.run_id))[old] == new


async def test_check_on_a_target_without_owned_rows(
    phase2_target_url: str, tmp_path: Path,
) -> None:
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path))
    conn = await asyncpg.connect(libpq_url(phase2_target_url))
    try:
        await conn.execute("UPDATE sessions SET owner_api_key_hash = NULL")
        await conn.execute("UPDATE assistants SET owner_api_key_hash = NULL")
    finally:
        await conn.close()
    check = await RotateKeysStep().check(ctx)
    assert check.done and "no client-owned rows" in check.reason
    assert (await RotateKeysStep().run(ctx, lambda _l: None)).facts["batches"] == 0


async def test_a_target_still_at_phase3_is_refused_in_one_sentence(
    target_db_url: str, tmp_path: Path,
) -> None:
    ctx = memory_context(sandbox_settings(target_db_url, tmp_path))
    with pytest.raises(StepError, match="cannot count clients on the target: 42703"):
        await RotateKeysStep().plan(ctx)
