"""Work a listener hands over after acknowledging Slack.

Slack gives an interaction 3 seconds. The listeners ack first, so the HTTP answer (or the Socket
Mode envelope ack) leaves at once, and start what the click asks for here. Unlike a bare
`create_task`, every task is kept until it ends, its failure is logged with the traceback, and
shutdown waits for what is in flight, so a click already answered is not dropped silently.

At most `limit` of these run at once; the rest wait their turn. Under a burst of clicks the acks
then keep most of the event loop (Slack's deadline is on the ack, not on the reply), and the
database pool is not emptied by replies. Work with a deadline of its own (opening a modal
within the 3 s of a `trigger_id`) starts at once instead (`start_now`), never queued.

Work that fails is logged, and `tell` (the request's reply path) says so to the person who
asked, so a failure after the ack is never silent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bot.slack.replies import failure_text

log = logging.getLogger(__name__)

Tell = Callable[[str], Awaitable[None]]


class Background:
    def __init__(self, limit: int = 4) -> None:
        self.limit = limit
        self._tasks: set[asyncio.Task[None]] = set()
        self._turns = asyncio.Semaphore(limit)

    def spawn(self, work: Coroutine[Any, Any, None], what: str, tell: Tell | None = None
              ) -> None:
        self._track(self._in_turn(self._told(work, tell)), what)

    def start_now(self, work: Coroutine[Any, Any, None], what: str, tell: Tell | None = None
                  ) -> None:
        """Not queued behind other work: for work racing a deadline of Slack's."""
        self._track(self._told(work, tell), what)

    def _track(self, work: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.create_task(work, name=what)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    async def _in_turn(self, work: Coroutine[Any, Any, None]) -> None:
        async with self._turns:
            await work

    @staticmethod
    async def _told(work: Coroutine[Any, Any, None], tell: Tell | None) -> None:
        try:
            await work
        except Exception as exc:
            if tell is not None:
                try:
                    await tell(failure_text(exc))
                except Exception as also:
                    log.warning("could not tell the person of the failure: %s", also)
            raise

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed after Slack was answered", task.get_name(),
                      exc_info=task.exception())

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def settled(self) -> None:
        """Return once no handed-over work is left (work started meanwhile included)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def drain(self, within: float) -> None:
        """Wait for the work in flight; what is still running after `within` s is cancelled."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=within)
        for task in late:
            log.warning("%s still running at shutdown: cancelled", task.get_name())
            task.cancel()
        if late:
            await asyncio.wait(late)
