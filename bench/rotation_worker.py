"""Runs our rotation step once against a target URL; prints timings and peak memory as JSON.

A separate process so that `ru_maxrss` is the step's own. The ledger is the bot's SQL ledger in
a bot database of its own (`bot_url`, migrated here), as `serve` runs it: a ledger in memory
would hold every pair and hide whether the step streams them. How long transactions stay open
is watched from outside, in pg_stat_activity (bench.rotation).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

from bot.db import repo_runs
from bot.db.ledgers import SqlNotificationLedger, SqlRotationLedger
from bot.db.migrate import upgrade_to_head
from bot.db.session import make_engine, make_sessionmaker
from bot.domain.step_protocol import StepContext
from bot.settings import Settings
from steps.rotate_keys import RotateKeysStep


async def main(url: str, bot_url: str, txn_seconds: float, workers: int,
               run_id: str | None) -> None:
    settings = Settings(_env_file=None, target_database_url=url,  # type: ignore[call-arg]
                        rotation_target_txn_seconds=txn_seconds, rotation_workers=workers)
    await upgrade_to_head(bot_url)
    engine = make_engine(bot_url)
    sessions = make_sessionmaker(engine)
    if run_id is None:  # else a resume of that run's rotation (after a kill)
        async with sessions() as session, session.begin():
            run = await repo_runs.create_run(session, initiator_id="U_BENCH",
                                             initiator_name="bench", reason="bench.rotation",
                                             source="terminal", channel_id=None)
            run_id = str(run.id)  # type: ignore[union-attr]
    print(f"RUN {run_id}", file=sys.stderr, flush=True)
    ctx = StepContext(run_id, settings, SqlRotationLedger(sessions),
                      SqlNotificationLedger(sessions))
    started = time.perf_counter()
    marks: dict[str, float] = {}

    def mark(line: str) -> None:  # when each phase ended, from the lines the step prints
        if line.startswith("sweep of "):  # the bench stops its writer here
            print("SWEEP", file=sys.stderr, flush=True)
        if line.startswith("batch "):  # the bench may kill the process here
            print("BATCH", file=sys.stderr, flush=True)
        for prefix, phase in (("new keys", "keys"), ("batch ", "pages")):
            if line.startswith(prefix):
                marks[phase] = time.perf_counter() - started

    before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    outcome = await RotateKeysStep().run(ctx, mark)
    seconds = time.perf_counter() - started
    await engine.dispose()
    print(json.dumps({
        "seconds": seconds, "batches": outcome.facts["batches"],
        "clients": outcome.facts["clients_rotated"],
        **{k: outcome.facts[k] for k in ("txn_p50_s", "txn_p90_s", "txn_p99_s",
                                         "longest_batch_s")},
        "cut_short": outcome.facts["transactions_cut_short"],
        "keys_s": marks.get("keys", 0.0),
        "pages_s": marks.get("pages", 0.0) - marks.get("keys", 0.0),
        "sweep_s": seconds - marks.get("pages", 0.0),
        "rss_before_mb": before_rss,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]),
                     sys.argv[5] if len(sys.argv) > 5 else None))
