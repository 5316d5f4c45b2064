"""Runs our rotation step once against a target URL; prints timings and peak memory as JSON.

A separate process so that `ru_maxrss` is the step's own. How long transactions stay open is
watched from outside, in pg_stat_activity (bench.rotation).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
import uuid

from bot.domain.memory_ledgers import MemoryNotificationLedger, MemoryRotationLedger
from bot.domain.step_protocol import StepContext
from bot.settings import Settings
from steps.rotate_keys import RotateKeysStep


async def main(url: str, txn_seconds: float, workers: int) -> None:
    settings = Settings(_env_file=None, target_database_url=url,  # type: ignore[call-arg]
                        rotation_target_txn_seconds=txn_seconds, rotation_workers=workers)
    ctx = StepContext(str(uuid.uuid4()), settings, MemoryRotationLedger(),
                      MemoryNotificationLedger())
    started = time.perf_counter()
    marks: dict[str, float] = {}

    def mark(line: str) -> None:  # when each phase ended, from the lines the step prints
        for prefix, phase in (("new keys", "keys"), ("batch ", "pages")):
            if line.startswith(prefix):
                marks[phase] = time.perf_counter() - started

    outcome = await RotateKeysStep().run(ctx, mark)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "seconds": seconds, "batches": outcome.facts["batches"],
        "clients": outcome.facts["clients_rotated"],
        "longest_batch_s": outcome.facts["longest_batch_s"],
        "keys_s": marks.get("keys", 0.0),
        "pages_s": marks.get("pages", 0.0) - marks.get("keys", 0.0),
        "sweep_s": seconds - marks.get("pages", 0.0),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
