"""Runs our rotation step once against a target URL; prints timings and peak memory as JSON.

A separate process so that `ru_maxrss` is the step's own. Batches are timed from the step's
own per-batch lines (each line follows that batch's commit).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import resource
import sys
import time
import uuid

from bot.settings import Settings
from steps.memory_ledgers import MemoryNotificationLedger, MemoryRotationLedger
from steps.protocol import StepContext
from steps.rotate_keys import RotateKeysStep


async def main(url: str, batch: int) -> None:
    settings = Settings(_env_file=None, target_database_url=url,  # type: ignore[call-arg]
                        rotation_batch_size=batch)
    ctx = StepContext(str(uuid.uuid4()), settings, MemoryRotationLedger(),
                      MemoryNotificationLedger())
    stamps: list[float] = []
    started = time.perf_counter()
    stamps.append(started)
    outcome = await RotateKeysStep().run(ctx, lambda _line: stamps.append(time.perf_counter()))
    seconds = time.perf_counter() - started
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    print(json.dumps({
        "seconds": seconds, "longest_tx": max(gaps) if gaps else 0.0,
        "batches": outcome.facts["batches"],
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
