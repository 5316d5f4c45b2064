"""The incident log's hash chain: written by the database, recomputed by Python, and a rewrite of
one event (edited, deleted, reordered) found by `rollback-bot verify-log`, naming that event.

Rewrites are made as someone holding the bot database's owner credentials would: the
append-only trigger switched off for the statement."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_events
from bot.db.migrate import alembic_config, upgrade_to_head
from bot.db.session import make_engine, make_sessionmaker
from bot.domain.events import EventKind, Source
from bot.domain.log_chain import GENESIS, encoding, verify_chain
from bot.urls import libpq_url

BIN = Path(sys.prefix) / "bin" / "rollback-bot"

# Data whose canonical text is not what json.dumps would print: key order by length, unicode,
# escapes, numbers jsonb keeps exactly, a nested list, an empty object.
AWKWARD_DATA: list[dict[str, Any]] = [
    {"reason": "DB on fire — \"again\"\n<!channel>", "b": 1, "aa": [1.50, 2e3, None, True]},
    {"zeta": {"y": {}, "x": []}, "émoji": "🔥", "tab": "a\tb", "n": 12345678901234567890},
    {},
]


async def new_run(conn: asyncpg.Connection, status: str = "completed") -> str:
    return str(await conn.fetchval(
        "INSERT INTO rollback_runs (id, status, initiator_id, initiator_name, reason, source)"
        " VALUES (gen_random_uuid(), $1, 'U1', 'alice', 'r', 'slack') RETURNING id", status))


@pytest.fixture
async def conn(bot_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(libpq_url(bot_db_url))
    try:
        yield connection
    finally:
        await connection.close()


async def write_events(sessions: async_sessionmaker[AsyncSession], run_id: str,
                       count: int, actor: str = "U1") -> None:
    for i in range(count):
        async with sessions() as session, session.begin():
            await repo_events.append_event(
                session, run_id, actor, Source.SLACK, EventKind.APPROVAL_GIVEN,
                "backup" if i % 2 else None, AWKWARD_DATA[i % len(AWKWARD_DATA)] | {"i": i})


async def verdict_of(sessions: async_sessionmaker[AsyncSession], run_id: str):  # type: ignore[no-untyped-def]
    async with sessions() as session:
        return verify_chain(await repo_events.chained_events(session, run_id),
                            await repo_events.chain_head(session, run_id))


async def tamper(conn: asyncpg.Connection, statement: str, *args: object) -> None:
    async with conn.transaction():
        await conn.execute("ALTER TABLE incident_events DISABLE TRIGGER "
                           "incident_events_append_only")
        await conn.execute(statement, *args)
        await conn.execute("ALTER TABLE incident_events ENABLE TRIGGER "
                           "incident_events_append_only")


async def ids_of(conn: asyncpg.Connection, run_id: str) -> list[int]:
    return [r["id"] for r in await conn.fetch(
        "SELECT id FROM incident_events WHERE run_id = $1 ORDER BY seq", uuid.UUID(run_id))]


async def test_python_recomputes_exactly_what_the_database_wrote(
    conn: asyncpg.Connection, bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    run_id = await new_run(conn)
    await write_events(bot_sessionmaker, run_id, 7, actor="Ünïcode\nactor|`x`")
    verdict = await verdict_of(bot_sessionmaker, run_id)
    assert verdict.intact, verdict.broken
    assert verdict.events == 7
    stored = await conn.fetch("SELECT seq, prev_hash, hash FROM incident_events "
                              "WHERE run_id = $1 ORDER BY seq", uuid.UUID(run_id))
    assert [r["seq"] for r in stored] == list(range(1, 8))
    assert stored[0]["prev_hash"] == GENESIS
    assert [r["hash"] for r in stored] == list(verdict.hashes)
    assert all(later["prev_hash"] == earlier["hash"] for earlier, later
               in itertools.pairwise(stored))
    assert await conn.fetchval("SELECT head_hash FROM incident_chain_heads WHERE run_id = $1",
                               uuid.UUID(run_id)) == verdict.head
    # The encodings themselves agree byte for byte, not only their hashes.
    async with bot_sessionmaker() as session:
        events = await repo_events.chained_events(session, run_id)
    for event in events:
        in_sql = await conn.fetchval(
            "SELECT incident_event_encoding(prev_hash, seq, id, run_id, at, actor, source, kind,"
            " step, data) FROM incident_events WHERE id = $1", event.id)
        assert in_sql.encode() == encoding(event.prev_hash, event.seq, event.id, event.run_id,
                                           event.at, event.actor, event.source, event.kind,
                                           event.step, event.data_text)


async def test_each_run_has_its_own_chain(
    conn: asyncpg.Connection, bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    first, second = await new_run(conn), await new_run(conn)
    await write_events(bot_sessionmaker, first, 3)
    await write_events(bot_sessionmaker, second, 2)
    await write_events(bot_sessionmaker, first, 1)
    assert (await verdict_of(bot_sessionmaker, first)).events == 4
    assert (await verdict_of(bot_sessionmaker, second)).events == 2
    assert (await verdict_of(bot_sessionmaker, second)).intact


@pytest.mark.parametrize("rewrite", ["edit data", "edit actor", "delete", "swap two",
                                     "renumber", "recompute one hash"])
async def test_rewriting_one_event_is_found_at_that_event(
    conn: asyncpg.Connection, bot_sessionmaker: async_sessionmaker[AsyncSession], rewrite: str,
) -> None:
    run_id = await new_run(conn)
    await write_events(bot_sessionmaker, run_id, 6)
    ids = await ids_of(conn, run_id)
    third, fourth = ids[2], ids[3]
    expect_broken = third
    if rewrite == "edit data":
        await tamper(conn, """UPDATE incident_events SET data = data || '{"count": 1}'
                              WHERE id = $1""", third)
    elif rewrite == "edit actor":
        await tamper(conn, "UPDATE incident_events SET actor = 'mallory' WHERE id = $1", third)
    elif rewrite == "delete":
        await tamper(conn, "DELETE FROM incident_events WHERE id = $1", third)
        expect_broken = fourth  # the event after the gap no longer links
    elif rewrite == "swap two":  # the contents of two events exchanged
        await tamper(conn, """UPDATE incident_events AS e SET data = o.data, step = o.step
                              FROM incident_events AS o
                              WHERE (e.id, o.id) IN (($1, $2), ($2, $1))""", third, fourth)
    elif rewrite == "renumber":  # the two events' places in the chain exchanged
        for event_id, seq in ((third, -1), (fourth, 3), (third, 4)):  # (run_id, seq) unique
            await tamper(conn, "UPDATE incident_events SET seq = $2 WHERE id = $1", event_id, seq)
        expect_broken = fourth  # now first in seq order at place 3
    elif rewrite == "recompute one hash":  # edited, and its own hash made to match
        await tamper(conn, """UPDATE incident_events SET actor = 'mallory',
                              hash = incident_event_hash(prev_hash, seq, id, run_id, at,
                                  'mallory', source, kind, step, data) WHERE id = $1""", third)
        expect_broken = fourth  # its successor still holds the true hash
    verdict = await verdict_of(bot_sessionmaker, run_id)
    assert verdict.broken is not None, rewrite
    assert verdict.broken.event_id == expect_broken, verdict.broken
    assert verdict.events == (3 if rewrite == "recompute one hash" else 2)  # intact before it


async def test_a_log_cut_short_at_its_end_is_found(
    conn: asyncpg.Connection, bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    run_id = await new_run(conn)
    await write_events(bot_sessionmaker, run_id, 4)
    last = (await ids_of(conn, run_id))[-1]
    await tamper(conn, "DELETE FROM incident_events WHERE id = $1", last)
    verdict = await verdict_of(bot_sessionmaker, run_id)
    assert verdict.broken is not None
    assert "missing at its end" in verdict.broken.reason


async def test_two_replicas_writing_at_once_form_one_chain(
    conn: asyncpg.Connection, bot_db_url: str,
) -> None:
    """Two engines (own pools, as two replicas have), each with several writers, each
    transaction writing two events with a pause between: the database orders them."""
    run_id = await new_run(conn, status="active")
    replicas = [make_engine(bot_db_url) for _ in range(2)]
    try:
        async def writer(sessions: async_sessionmaker[AsyncSession], name: str) -> None:
            for i in range(10):
                async with sessions() as session, session.begin():
                    for half in ("a", "b"):
                        await repo_events.append_event(
                            session, run_id, name, Source.BOT, EventKind.STEP_OUTPUT, "backup",
                            {"writer": name, "i": i, "half": half})
                        await asyncio.sleep(0.001 * (i % 3))

        await asyncio.gather(*(writer(make_sessionmaker(replica), f"r{n}w{w}")
                               for n, replica in enumerate(replicas) for w in range(3)))
    finally:
        for replica in replicas:
            await replica.dispose()
    async with make_sessionmaker(make_engine(bot_db_url))() as session:
        events = await repo_events.chained_events(session, run_id)
        verdict = verify_chain(events, await repo_events.chain_head(session, run_id))
    assert verdict.intact, verdict.broken
    assert verdict.events == 2 * 3 * 10 * 2
    assert [e.seq for e in events] == list(range(1, 121))
    ids = [e.id for e in events]
    assert ids == sorted(ids)  # a run's ids follow its chain: the mirror's cursor misses none
    # A transaction's two events are adjacent: the run's chain is held until it commits.
    for first, second in zip(events[::2], events[1::2], strict=True):
        assert (first.actor, first.data_text.replace('"a"', '"b"')) == \
               (second.actor, second.data_text)


async def test_verify_log_command_names_the_broken_event(
    conn: asyncpg.Connection, bot_db_url: str, bot_sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    run_id = await new_run(conn)
    await write_events(bot_sessionmaker, run_id, 5)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "DATABASE_URL": bot_db_url}

    def verify(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), "verify-log", *argv], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, check=False)

    intact = verify(run_id[:8])
    assert intact.returncode == 0, intact.stderr
    head = (await verdict_of(bot_sessionmaker, run_id)).head
    assert f"5 events, chain intact, head {head}" in intact.stdout
    assert verify("--head", head[:16]).returncode == 0  # the last run by default
    ids = await ids_of(conn, run_id)
    await tamper(conn, "UPDATE incident_events SET actor = 'mallory' WHERE id = $1", ids[1])
    broken = verify(run_id)
    assert broken.returncode == 1
    assert f"BROKEN at event #{ids[1]} (seq 2)" in broken.stdout
    assert "it was edited" in broken.stdout
    # Rewritten from scratch with every hash recomputed: only the copy of the head tells.
    await rechain(conn, run_id)
    assert verify(run_id).returncode == 0
    stale = verify(run_id, "--head", head)
    assert stale.returncode == 1
    assert "is NOT in this log" in stale.stdout
    refused = verify("ffffffff")
    assert refused.returncode == 2
    assert "no run whose id starts with 'ffffffff'" in refused.stderr


async def rechain(conn: asyncpg.Connection, run_id: str) -> None:
    """What a careful forger does: recompute every hash and the head after the edit."""
    async with conn.transaction():
        await conn.execute("ALTER TABLE incident_events DISABLE TRIGGER "
                           "incident_events_append_only")
        previous = GENESIS
        for row in await conn.fetch("SELECT id FROM incident_events WHERE run_id = $1 "
                                    "ORDER BY seq", uuid.UUID(run_id)):
            previous = await conn.fetchval(
                "UPDATE incident_events SET prev_hash = $2::text, hash = incident_event_hash("
                "$2::text, seq, id, run_id, at, actor, source, kind, step, data) WHERE id = $1 "
                "RETURNING hash",
                row["id"], previous)
        await conn.execute("UPDATE incident_chain_heads SET head_hash = $2 WHERE run_id = $1",
                           uuid.UUID(run_id), previous)
        await conn.execute("ALTER TABLE incident_events ENABLE TRIGGER "
                           "incident_events_append_only")


async def test_the_upgrade_chains_the_events_written_before_it(empty_db_url: str) -> None:
    await asyncio.to_thread(command.upgrade, alembic_config(empty_db_url), "0002_resend")
    connection = await asyncpg.connect(libpq_url(empty_db_url))
    try:
        runs = [await new_run(connection) for _ in range(2)]
        for i in range(5):
            await connection.execute(
                "INSERT INTO incident_events (run_id, actor, source, kind, step, data)"
                " VALUES ($1, 'U1', 'slack', 'approval_given', NULL, $2::jsonb)",
                uuid.UUID(runs[i % 2]), json.dumps(AWKWARD_DATA[i % 3]))
    finally:
        await connection.close()
    await upgrade_to_head(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        sessions = make_sessionmaker(engine)
        await write_events(sessions, runs[0], 1)  # the trigger continues the chain
        first, second = [await verdict_of(sessions, run) for run in runs]
    finally:
        await engine.dispose()
    assert first.intact and first.events == 4, first.broken
    assert second.intact and second.events == 2, second.broken
