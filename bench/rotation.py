"""Key rotation at scale: our step against the runbook's own SQL, on identical copies, same run.

A Phase 2 target (the state after the downgrade: owner_api_key NULL, hashes set, the real
indexes) with SESSIONS sessions and ASSISTANTS assistants over CLIENTS distinct owners is built
once as a template; each contender gets its own copy. Reported: wall time and the ratio, the
longest single transaction (how long row locks are held), and the bot process's peak memory.

    python -m bench.rotation [--sessions 1000000 --assistants 200000 --clients 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid

import asyncpg

from bot.db.urls import libpq_url, with_database
from sandbox.migrate import migrate

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# The floor: what Postgres itself needs to rewrite every owned row once (new tuple + index
# entries), with a constant instead of a key: no key generation, no join, no hashing.
FLOOR_SQL = (
    "UPDATE sessions SET owner_api_key = 'x' WHERE owner_api_key_hash IS NOT NULL",
    "UPDATE assistants SET owner_api_key = 'x' WHERE owner_api_key_hash IS NOT NULL",
)
RUNBOOK_SQL = (
    "UPDATE sessions SET owner_api_key = gen_random_uuid()::text "
    "WHERE owner_api_key_hash IS NOT NULL",
    "UPDATE assistants SET owner_api_key = gen_random_uuid()::text "
    "WHERE owner_api_key_hash IS NOT NULL",
)


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(libpq_url(ADMIN))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def build_template(name: str, sessions: int, assistants: int, clients: int) -> None:
    await admin(f'CREATE DATABASE "{name}"')
    url = with_database(ADMIN, name)
    await migrate(url, "20260201_000006")  # the schema the downgrade leaves behind
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await conn.execute(f"""
            INSERT INTO sessions (id, model, owner_api_key_hash)
            SELECT gen_random_uuid(), 'claude-sonnet',
                   encode(sha256(('client-' || (g % {clients}))::bytea), 'hex')
            FROM generate_series(1, {sessions}) g;
            INSERT INTO assistants (id, model, owner_api_key_hash)
            SELECT 'asst_' || g, 'claude-sonnet',
                   encode(sha256(('client-' || ((g * 7) % {clients}))::bytea), 'hex')
            FROM generate_series(1, {assistants}) g;
        """)
        for table_name in ("sessions", "assistants"):
            await conn.execute(f"VACUUM ANALYZE {table_name}")
    finally:
        await conn.close()


async def copy_of(template: str, tag: str) -> str:
    name = f"{template}_{tag}"
    await admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return with_database(ADMIN, name)


async def timed(url: str, statements: tuple[str, ...]) -> dict[str, float]:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        durations = []
        started = time.perf_counter()
        for statement in statements:  # autocommit: each statement is one transaction
            t0 = time.perf_counter()
            await conn.execute(statement)
            durations.append(time.perf_counter() - t0)
        return {"seconds": time.perf_counter() - started, "longest_tx": max(durations)}
    finally:
        await conn.close()


def ours(url: str, batch: int) -> dict[str, float]:
    """Our step in a fresh process, so its peak memory is its own."""
    out = subprocess.run([sys.executable, "-m", "bench.rotation_worker", url, str(batch)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in rows)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--assistants", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    template = f"bench_rot_{uuid.uuid4().hex[:6]}"
    created = [template]
    try:
        t0 = time.perf_counter()
        await build_template(template, args.sessions, args.assistants, args.clients)
        print(f"built the target in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        copies = {tag: await copy_of(template, tag) for tag in ("floor", "runbook", "ours")}
        created += [f"{template}_{tag}" for tag in copies]
        floor = await timed(copies["floor"], FLOOR_SQL)
        base = await timed(copies["runbook"], RUNBOOK_SQL)
        mine = await asyncio.to_thread(ours, copies["ours"], args.batch)
        print(f"Key rotation: {args.sessions:,} sessions, {args.assistants:,} assistants, "
              f"{args.clients:,} clients (batch {args.batch:,})\n")
        print(table([
            ("floor: rewrite every row once", f"{floor['seconds']:.1f} s"),
            ("runbook SQL (per row, wrong)", f"{base['seconds']:.1f} s, longest transaction "
                                             f"{base['longest_tx']:.1f} s"),
            ("rollback-bot (per client)", f"{mine['seconds']:.1f} s, longest transaction "
                                          f"{mine['longest_tx']:.2f} s, "
                                          f"{mine['batches']:,} batches"),
            ("ratio ours / runbook", f"{mine['seconds'] / base['seconds']:.2f}"),
            ("ratio ours / floor", f"{mine['seconds'] / floor['seconds']:.2f}"),
            ("bot peak memory (RSS)", f"{mine['max_rss_mb']:.0f} MB"),
        ]))
    finally:
        for name in reversed(created):
            await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
