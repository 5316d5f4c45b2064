"""What the incident log's hash chain costs an event insert: the bot's own write path
(`repo_events.append_event`, one event per transaction, as `Journal.append` does) on a bot
database at migration 0002_resend (no chain) against one at the head (the chain's trigger), with
1 and with 8 writers on the same run, as the replicas and the step's output batches of one
rollback write it. Both databases are made fresh in the same run, on the same server.

    python -m bench.event_chain [--events 2000 --rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass

from alembic import command
from sqlalchemy import text

from bench.rotation import ADMIN, admin
from bot.db import repo_events
from bot.db.migrate import alembic_config, upgrade_to_head
from bot.db.session import make_engine, make_sessionmaker
from bot.domain.events import EventKind, Source
from bot.domain.log_chain import verify_chain
from bot.urls import with_database

DATA = {"execution_id": "0" * 36, "first": 120, "lines": ["pg_dump: dumping contents of "
                                                          "table public.sessions"] * 4}


@dataclass
class Result:
    events_per_second: float
    p50_ms: float
    p99_ms: float


async def bot_database(chained: bool) -> str:
    name = f"bench_chain_{uuid.uuid4().hex[:6]}"
    await admin(f'CREATE DATABASE "{name}"')
    url = with_database(ADMIN, name)
    if chained:
        await upgrade_to_head(url)
    else:
        await asyncio.to_thread(command.upgrade, alembic_config(url), "0002_resend")
    return name


async def one_round(url: str, writers: int, events: int, chained: bool) -> Result:
    db = make_engine(url)
    sessions = make_sessionmaker(db)
    try:
        async with sessions() as session, session.begin():
            run_id = str((await session.execute(text(
                "INSERT INTO rollback_runs (id, status, initiator_id, initiator_name, reason,"
                " source) VALUES (gen_random_uuid(), 'completed', 'U1', 'a', 'bench', 'slack')"
                " RETURNING id"))).scalar_one())
        latencies: list[float] = []

        async def writer(count: int) -> None:
            for _ in range(count):
                started = time.perf_counter()
                async with sessions() as session, session.begin():
                    await repo_events.append_event(session, run_id, "bot", Source.BOT,
                                                   EventKind.STEP_OUTPUT, "backup", DATA)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(writer(events // writers) for _ in range(writers)))
        elapsed = time.perf_counter() - started
        if chained:
            async with sessions() as session:
                verdict = verify_chain(await repo_events.chained_events(session, run_id),
                                       await repo_events.chain_head(session, run_id))
            if not verdict.intact or verdict.events != len(latencies):
                raise SystemExit(f"the chain is broken: {verdict.broken}")
    finally:
        await db.dispose()
    latencies.sort()
    return Result(len(latencies) / elapsed, statistics.median(latencies) * 1000,
                  latencies[int(len(latencies) * 0.99) - 1] * 1000)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000, help="events per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians are shown)")
    args = parser.parse_args()
    names = {chained: await bot_database(chained) for chained in (False, True)}
    try:
        print("| writers | without the chain | with the chain | ratio (events/s) | "
              "p50 / p99 without | p50 / p99 with |")
        print("|---|---|---|---|---|---|")
        for writers in (1, 8):
            results: dict[bool, list[Result]] = {False: [], True: []}
            for _ in range(args.rounds):  # alternated, so load from others hits both alike
                for chained in (False, True):
                    url = with_database(ADMIN, names[chained])
                    results[chained].append(await one_round(url, writers, args.events,
                                                            chained))

            def median(chained: bool, field: str,
                       results: dict[bool, list[Result]] = results) -> float:
                return statistics.median(getattr(r, field) for r in results[chained])

            plain, chain = (median(c, "events_per_second") for c in (False, True))
            print(f"| {writers} | {plain:,.0f}/s | {chain:,.0f}/s | {chain / plain:.2f} | "
                  f"{median(False, 'p50_ms'):.2f} / {median(False, 'p99_ms'):.2f} ms | "
                  f"{median(True, 'p50_ms'):.2f} / {median(True, 'p99_ms'):.2f} ms |")
    finally:
        for name in names.values():
            await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
