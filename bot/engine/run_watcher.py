"""A background loop fed by the engine's change notices: the shape every subscriber shares.

`notify(run_id)` (the engine calls it after each committed change) marks the run and wakes the
loop; the loop hands the runs marked since its last pass to `pass_over`, then sleeps until the
next notice or `interval` seconds — time passes without changes too (a step waits, Slack was
down). Runs `pass_over` could not finish are marked again with `again`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from bot.engine.journal import ChangeListener

log = logging.getLogger(__name__)


class Subscribable(Protocol):
    def subscribe(self, listener: ChangeListener) -> None: ...


class RunWatcher:
    def __init__(self, engine: Subscribable, interval: float) -> None:
        self.interval = interval
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        engine.subscribe(self.notify)

    def notify(self, run_id: str) -> None:
        self._dirty.add(run_id)
        self._wake.set()

    def again(self, *run_ids: str) -> None:
        """Look at these runs on the next pass (no wake-up: after the interval)."""
        self._dirty.update(run_ids)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def pass_over(self, runs: set[str]) -> None:
        raise NotImplementedError

    async def _loop(self) -> None:
        while True:
            runs, self._dirty = self._dirty, set()
            try:
                await self.pass_over(runs)
            except Exception:
                log.exception("%s: pass failed; trying again", type(self).__name__)
                self.again(*runs)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when it is
            # cancelled just as the event fires, and stop() would then wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
