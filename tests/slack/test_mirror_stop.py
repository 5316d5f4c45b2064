"""Shutting down never hangs on the thread mirror, even when a change arrives at that moment."""

from __future__ import annotations

import asyncio

from tests.slack.harness import SlackBot


async def test_stop_right_after_a_change_returns(bot: SlackBot) -> None:
    mirror = bot.front.mirror
    for _ in range(5):  # each time: a change wakes the mirror just as it is stopped
        mirror.start()
        await asyncio.sleep(0.05)  # the mirror is idle, waiting to be woken
        mirror.notify("00000000-0000-0000-0000-000000000000")
        stopping = asyncio.create_task(mirror.stop())
        done, _ = await asyncio.wait({stopping}, timeout=10)
        assert stopping in done, "stop() hangs: the mirror swallowed its cancellation"
