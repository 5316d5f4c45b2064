"""Shutdown of handed-over work: queued work is left unrun without a never-awaited coroutine,
running work gets its short finish, nothing is started after the drain."""

from __future__ import annotations

import asyncio
import gc
import warnings

from bot.slack.background import Background


async def test_work_still_queued_at_the_deadline_is_left_unrun_and_not_warned_of() -> None:
    background = Background(limit=1)
    release, done = asyncio.Event(), []

    async def reply(n: int) -> None:
        await release.wait()
        done.append(n)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(5):
            background.spawn(reply(n), f"click {n}")
        background.start_now(reply(99), "modal")
        await asyncio.sleep(0)  # the first has its turn; the modal runs; three wait
        drain = asyncio.create_task(background.drain(within=0.1, finish=5))
        await asyncio.sleep(0.3)
        assert not drain.done(), "running work gets its finish"
        release.set()
        await drain
        background.spawn(reply(7), "after the drain")  # a request answered late: not started
        await asyncio.sleep(0)
        gc.collect()
    assert sorted(done) == [0, 99], "what was running finished; the queued ones never ran"
    assert background.pending == 0
    assert not [w for w in caught if "never awaited" in str(w.message)], \
        [str(w.message) for w in caught]


async def test_running_work_past_its_finish_is_cancelled() -> None:
    background = Background(limit=2)
    stuck = asyncio.Event()
    cancelled = []

    async def hangs() -> None:
        try:
            await stuck.wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    background.spawn(hangs(), "stuck reply")
    await asyncio.sleep(0)
    await background.drain(within=0.05, finish=0.05)
    assert cancelled == [True]
    assert background.pending == 0
