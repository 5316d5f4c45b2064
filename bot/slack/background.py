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

At shutdown (`drain`) what is in flight gets a few seconds; then work that never started is
closed unrun (a click's inbox row is already committed: the next replica's inbox watcher does
it), and work still running gets a little longer, then is cancelled (a click's claim then
lapses for the same watcher).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bot.slack.replies import failure_text

log = logging.getLogger(__name__)

Tell = Callable[[str], Awaitable[None]]
FINISH_SECONDS = 2.0  # at shutdown, what work already running gets after the drain's time


class Background:
    def __init__(self, limit: int = 4) -> None:
        self.limit = limit
        self._tasks: set[asyncio.Task[None]] = set()
        self._turns = asyncio.Semaphore(limit)
        # Each task's work as the listener made it: closed if the task ends before running it.
        self._work: dict[asyncio.Task[None], Coroutine[Any, Any, None]] = {}
        self._closed = False  # drained: nothing new is started

    def spawn(self, work: Coroutine[Any, Any, None], what: str, tell: Tell | None = None
              ) -> None:
        self._track(self._in_turn(work, tell), work, what)

    def start_now(self, work: Coroutine[Any, Any, None], what: str, tell: Tell | None = None
                  ) -> None:
        """Not queued behind other work: for work racing a deadline of Slack's."""
        self._track(self._told(work, tell), work, what)

    def _track(self, task_work: Coroutine[Any, Any, None], work: Coroutine[Any, Any, None],
               what: str) -> None:
        if self._closed:
            task_work.close()
            work.close()
            log.warning("%s arrived after shutdown began: not started", what)
            return
        task = asyncio.create_task(task_work, name=what)
        self._tasks.add(task)
        self._work[task] = work
        task.add_done_callback(self._finished)

    async def _in_turn(self, work: Coroutine[Any, Any, None], tell: Tell | None) -> None:
        async with self._turns:
            await self._told(work, tell)

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
        work = self._work.pop(task, None)
        if work is not None and inspect.getcoroutinestate(work) == inspect.CORO_CREATED:
            work.close()  # cancelled before its turn: never run, and not warned of
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

    def _unstarted(self, task: asyncio.Task[None]) -> bool:
        return inspect.getcoroutinestate(self._work[task]) == inspect.CORO_CREATED

    async def drain(self, within: float, finish: float = FINISH_SECONDS) -> None:
        """Wait for the work in flight (and what it starts) for up to `within` s; then work
        not started yet is closed unrun and nothing new starts; work already running gets
        `finish` s more (a click's processing takes milliseconds; cut short, its transition
        could be done again by the next replica), then is cancelled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - loop.time())
        self._closed = True
        waiting = {task for task in self._tasks if self._unstarted(task)}
        for task in waiting:
            task.cancel()
        running = set(self._tasks) - waiting
        late: set[asyncio.Task[None]] = set()
        if running:
            _, late = await asyncio.wait(running, timeout=finish)
        for task in late:
            task.cancel()
        if waiting or late:
            log.warning("shutdown: %d piece(s) of acked work not started, left (a click to the "
                        "next replica's inbox watcher); %d still running, cancelled: %s",
                        len(waiting), len(late),
                        ", ".join(sorted({task.get_name() for task in waiting | late})))
            await asyncio.wait(waiting | late)
