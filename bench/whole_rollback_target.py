"""The whole-rollback bench's target: the rehearsal's sandbox, filled to benchmark size.

`rollback-bot rehearse --sandbox` stands up everything the six steps act on (a bot database, a
target at the Phase 3 head, the code checkout, the api in Docker or as a local process); here
that same sandbox (`bot.rehearsal.sandbox.stand_up`) gets its handful of rows replaced by the
bench's shape, as `bench.rotation` builds it: SESSIONS sessions and ASSISTANTS assistants over
CLIENTS owners, made in the database (generate_series), with the client directory CSV for
every owner. The runbook baseline gets a second database filled the same way.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TextIO

import asyncpg

from bot.rehearsal.sandbox import Sandbox, stand_up
from bot.settings import Settings
from bot.urls import libpq_url, password_of
from sandbox.migrate import migrate
from sandbox.seed import SeededClient, write_directory


def owner_hash(n: int) -> str:
    """Client n's (lost) Phase 3 key hash; the SQL below makes the same one."""
    return hashlib.sha256(f"client-{n}".encode()).hexdigest()


def fill_sql(sessions: int, assistants: int, clients: int) -> str:
    owner = "encode(sha256(('client-' || ({n}))::bytea), 'hex')"
    return f"""
        TRUNCATE sessions, assistants CASCADE;
        INSERT INTO sessions (id, model, status, total_turns, session_metadata,
                              owner_api_key_hash)
        SELECT gen_random_uuid(), 'claude-sonnet-4', 'completed', 2,
               jsonb_build_object('client', g % {clients}), {owner.format(n=f"g % {clients}")}
        FROM generate_series(1, {sessions}) g;
        INSERT INTO assistants (id, model, name, assistant_metadata, owner_api_key_hash)
        SELECT 'asst_' || g, 'claude-sonnet-4', 'helper ' || g,
               jsonb_build_object('client', (g * 7) % {clients}),
               {owner.format(n=f"(g * 7) % {clients}")}
        FROM generate_series(1, {assistants}) g;
    """


async def fill(url: str, sessions: int, assistants: int, clients: int) -> float:
    """Replace the target's rows with the bench's; returns the seconds it took."""
    started = time.perf_counter()
    conn = await asyncpg.connect(libpq_url(url), password=password_of(url))
    try:
        await conn.execute(fill_sql(sessions, assistants, clients))
        for table in ("sessions", "assistants"):
            await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()
    return time.perf_counter() - started


def write_clients_csv(path: Path, clients: int) -> None:
    """`name,email,api_key_sha256` for every owner, through the sandbox's own writer."""
    write_directory(path, [SeededClient(f"Client {n:06d}", f"client{n:06d}@example.test", "",
                                        owner_hash(n), True) for n in range(clients)])


async def stand_up_filled(base: Settings, folder: Path, sessions: int, assistants: int,
                          clients: int, use_docker: bool | None, log: TextIO
                          ) -> tuple[Sandbox, float]:
    """The rehearsal's sandbox (one seeded client), then filled to size; (sandbox, fill s)."""
    sandbox = await stand_up(base, folder, 1, log, use_docker)
    try:
        target = sandbox.settings.target_database_url.get_secret_value()
        seconds = await fill(target, sessions, assistants, clients)
        assert sandbox.settings.client_directory is not None
        write_clients_csv(sandbox.settings.client_directory, clients)
    except BaseException:
        await sandbox.tear_down()
        raise
    return sandbox, seconds


async def filled_copy(sandbox: Sandbox, name: str, sessions: int, assistants: int,
                      clients: int) -> str:
    """A second target at the Phase 3 head with the same shape (for the runbook baseline)."""
    url = await sandbox.server.create_database(name)
    sandbox.databases.append(name)
    await migrate(url, "head")
    await fill(url, sessions, assistants, clients)
    return url
