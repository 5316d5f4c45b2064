"""The Slack thread as a view of the incident log.

The engine only says "run X changed". The mirror redraws the status board and the step messages
from the database, writing at most about once a second per channel, and delivers the log's
one-off entries (attached output, summary, timeline) in order through a cursor kept in the
database: a Slack outage delays the thread, never a step, and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import repo_events, repo_runs
from bot.db.models import IncidentEvent
from bot.domain.events import EventKind
from bot.domain.states import StepStatus
from bot.domain.steps import STEP_ORDER, StepName
from bot.domain.timeline import timeline_markdown
from bot.domain.views import RunView, StepView
from bot.engine.engine import Engine
from bot.engine.view_builder import TAIL_LINES, build_run_view
from bot.slack import blocks

log = logging.getLogger(__name__)

_FINAL_EVENTS = frozenset({EventKind.RUN_COMPLETED, EventKind.RUN_ABORTED, EventKind.STEP_REJECTED})
WRITE_INTERVAL = 1.0  # Slack allows roughly one write per second per channel
RETRY_DELAY = 2.0
_UNKNOWN = object()  # a status no message has shown yet
_TICK = 2  # rank of a redraw that keeps the status: new lines, approvals, the clock


class WriteBudget:
    """Spaces writes to one channel at least `interval` seconds apart."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def wait_turn(self, channel: str) -> bool:
        """Sleep until a write to `channel` could go out at once, reserving nothing, so that
        what is written can be decided when it is sent. True if it had to wait."""
        waited = False
        while (wait := self._next.get(channel, 0.0) - time.monotonic()) > 0:
            waited = True
            await asyncio.sleep(wait)
        return waited

    async def take(self, channel: str) -> None:
        async with self._lock:
            now = time.monotonic()
            wait = self._next.get(channel, now) - now
            self._next[channel] = max(now, self._next.get(channel, now)) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass(frozen=True)
class Write:
    """The one write the thread needs most now; `send` spends one slot of the budget (two
    for the closing summary and its timeline)."""

    key: str
    channel: str
    send: Callable[[], Awaitable[object]]


class ThreadMirror:
    """Writes to the thread in this order of value, each drawn from the log when its turn
    comes: the root; then, in thread order, new step messages, attached output and step
    messages whose status changed (a step's message, its attached output, its final state,
    the next step's message); the status board; redraws that only move a running step's tail,
    approvals or clock; the closing summary and timeline, once every message shows its final
    state. The attached output holds every line, so it goes before the redraws that only
    show the newest."""

    def __init__(self, engine: Engine, client: AsyncWebClient, interval: float = WRITE_INTERVAL):
        self.engine = engine
        self.client = client
        self.budget = WriteBudget(interval)
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._sent: dict[str, str] = {}  # message key -> digest of what Slack shows
        self._shown_status: dict[str, StepStatus | None] = {}  # step message -> status shown
        self._task: asyncio.Task[None] | None = None
        engine.subscribe(self.notify)

    def notify(self, run_id: str) -> None:
        self._dirty.add(run_id)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when it is
            # cancelled just as the event fires, and stop() would then wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WRITE_INTERVAL):
                    await self._wake.wait()
            self._wake.clear()
            runs, self._dirty = self._dirty, set()
            for run_id in runs:
                try:
                    still_live = await self.sync(run_id)
                except (TimeoutError, SlackApiError, OSError) as exc:
                    log.warning("Slack is not taking writes (%s); retrying", exc)
                    self._dirty.add(run_id)
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                except Exception:
                    log.exception("could not mirror run %s", run_id)
                    self._dirty.add(run_id)
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                if still_live:  # keep the elapsed time of a running step moving
                    self._dirty.add(run_id)

    async def drain(self) -> None:
        """Sync until nothing is pending (tests, shutdown); callers bound it with a timeout."""
        while self._dirty:
            for run_id in list(self._dirty):
                self._dirty.discard(run_id)
                await self.sync(run_id)

    # --- one pass ---------------------------------------------------------------------------

    async def sync(self, run_id: str) -> bool:
        """Bring the thread up to date, one write at a time, the most valuable first. A
        running step's clock and tail are redrawn once a pass, so a pass ends; True if there
        is more to draw (a step is running, or a redraw waits for the next pass)."""
        redrawn: set[str] = set()
        while True:
            view, write, deferred = await self._next_write(run_id, redrawn)
            if write is not None and await self.budget.wait_turn(write.channel):
                # The log moved on while we waited: decide again, from what it says now.
                view, write, deferred = await self._next_write(run_id, redrawn)
            if write is None:
                return deferred or any(s.status is StepStatus.RUNNING for s in view.steps)
            await write.send()
            redrawn.add(write.key)

    async def _next_write(
        self, run_id: str, redrawn: set[str]
    ) -> tuple[RunView, Write | None, bool]:
        """The most valuable write now (None: nothing), and whether a redraw was put off
        because this pass already made it."""
        entry, view, posted = await self._snapshot(run_id)
        channel = view.channel_id or self.engine.settings.rollback_channel
        thread_ts = view.thread_ts
        if not thread_ts:
            return view, Write(f"{run_id}:board", channel,
                               functools.partial(self._post_root, view, channel)), False
        now = datetime.now(UTC)
        redraws = self._redraws(view, channel, thread_ts, posted, now)
        deliver = None if entry is None else Write(f"entry:{entry.id}", channel, functools.partial(
            self._deliver, view, entry, channel, thread_ts))
        moved = {write.key: write for rank, _, write in redraws if rank == 0}
        for step in view.steps:  # in thread order: messages, attached output, status changes
            if step.execution_id is None:
                continue
            if not posted.get(step.execution_id):
                if entry is not None and _entry_goes_before(entry, step):
                    return view, deliver, False
                text, step_blocks = blocks.step_message(view, step, now)
                return view, Write(step.execution_id, channel, functools.partial(
                    self._post_step, step, channel, thread_ts, text, step_blocks)), False
            if step.execution_id in moved:
                if entry is not None and _entry_goes_before_redraw(entry, step):
                    return view, deliver, False
                return view, moved[step.execution_id], False
        if entry is not None and not _closes(entry):
            return view, deliver, False
        ready = [(rank, order, write) for rank, order, write in redraws
                 if rank < _TICK or write.key not in redrawn]
        if ready:
            return view, min(ready, key=lambda r: r[:2])[2], False
        if redraws:  # only ticks this pass has drawn already; the summary waits for them too
            return view, None, True
        return view, deliver, False

    def _redraws(
        self, view: RunView, channel: str, thread_ts: str, posted: dict[str, str | None],
        now: datetime,
    ) -> list[tuple[int, int, Write]]:
        """Every message Slack shows differently from the log, ranked: a step's status moved
        (0), the board (1), the same status with new lines, approvals or clock (_TICK)."""
        board_key = f"{view.run_id}:board"
        redraws: list[tuple[int, int, Write]] = []
        text, board = blocks.status_board(view)
        if self._sent.get(board_key) != _digest(text, board):
            redraws.append((1, 0, Write(board_key, channel, functools.partial(
                self._update, board_key, channel, thread_ts, text, board))))
        for order, step in enumerate(view.steps):
            ts = posted.get(step.execution_id or "")
            if step.execution_id is None or ts is None:
                continue
            text, step_blocks = blocks.step_message(view, step, now)
            if self._sent.get(step.execution_id) == _digest(text, step_blocks):
                continue
            moved = self._shown_status.get(step.execution_id, _UNKNOWN) != step.status
            redraws.append((0 if moved else _TICK, order, Write(
                step.execution_id, channel, functools.partial(
                    self._update, step.execution_id, channel, ts, text, step_blocks,
                    step.status))))
        return redraws

    async def _post_root(self, view: RunView, channel: str) -> str:
        async with self.engine.sessions() as session, session.begin():
            run = await repo_runs.get_run(session, view.run_id, for_update=True)
            if run is not None and run.thread_ts:  # another replica posted it meanwhile
                return str(run.thread_ts)
            text, board = blocks.status_board(view)
            await self.budget.take(channel)
            answer = await self.client.chat_postMessage(channel=channel, text=text, blocks=board)
            await repo_runs.set_run_thread(session, view.run_id, answer["channel"], answer["ts"])
        self._sent[f"{view.run_id}:board"] = _digest(text, board)
        return str(answer["ts"])

    async def _snapshot(
        self, run_id: str
    ) -> tuple[IncidentEvent | None, RunView, dict[str, str | None]]:
        """The next one-off entry, the run and which step messages are posted, all as of one
        moment: a step's end and its log entry are one commit, so the mirror sees both or
        neither (its output file never trails its final redraw, its summary never leads)."""
        async with self.engine.sessions() as session:
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            entry, passed = await self._next_entry(session, run_id)
            view = await build_run_view(session, run_id)
            posted: dict[str, str | None] = {}
            for step in view.steps:  # execution id -> its message's ts (None: not posted)
                if step.execution_id is not None:
                    execution = await repo_runs.get_execution(session, step.execution_id)
                    posted[step.execution_id] = execution.message_ts if execution else None
        if passed is not None:
            await self._advance(run_id, passed)
        return entry, view, posted

    async def _post_step(
        self, step: StepView, channel: str, thread_ts: str, text: str,
        step_blocks: list[dict[str, Any]],
    ) -> None:
        assert step.execution_id is not None
        async with self.engine.sessions() as session, session.begin():
            execution = await repo_runs.get_execution(session, step.execution_id,
                                                      for_update=True)
            if execution is None or execution.message_ts:
                return
            await self.budget.take(channel)
            answer = await self.client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=text, blocks=step_blocks
            )
            await repo_runs.set_execution_message(session, step.execution_id, answer["ts"])
        self._sent[step.execution_id] = _digest(text, step_blocks)
        self._shown_status[step.execution_id] = step.status

    async def _update(
        self, key: str, channel: str, ts: str, text: str, message_blocks: list[dict[str, Any]],
        status: StepStatus | None = None,
    ) -> None:
        await self.budget.take(channel)
        await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=message_blocks)
        self._sent[key] = _digest(text, message_blocks)
        self._shown_status[key] = status

    # --- one-off entries (the outbox) ---------------------------------------------------------

    async def _next_entry(
        self, session: AsyncSession, run_id: str
    ) -> tuple[IncidentEvent | None, int | None]:
        """The first entry after the cursor that puts something in the thread, and the last
        entry before it (None: none) that has nothing to send, for the cursor to pass."""
        cursor = skipped = await repo_events.outbox_cursor(session, run_id)
        while True:
            events = await repo_events.events_after(session, run_id, skipped, limit=500)
            for event in events:
                if await self._sends_something(session, event):
                    return event, (skipped if skipped != cursor else None)
                skipped = event.id
            if len(events) < 500:
                return None, (skipped if skipped != cursor else None)

    async def _sends_something(self, session: AsyncSession, event: IncidentEvent) -> bool:
        kind = EventKind(event.kind)
        if kind in _FINAL_EVENTS:
            return True
        if kind not in (EventKind.STEP_SUCCEEDED, EventKind.STEP_FAILED):
            return False
        count = (event.data.get("facts") or {}).get("output_lines")
        if not isinstance(count, int):
            _, count = await repo_events.output_summary(
                session, str(event.run_id), event.data.get("execution_id", ""), 1)
        return count > TAIL_LINES

    async def _deliver(
        self, view: RunView, event: IncidentEvent, channel: str, thread_ts: str
    ) -> None:
        """At least once: the cursor passes the entry only after Slack has taken it."""
        if _closes(event):
            # The run may have ended after `view` was read: summarise what is there now.
            await self._post_summary(await self.engine.run_view(view.run_id), channel,
                                     thread_ts)
        else:
            await self._attach_output(view, event, channel, thread_ts)
        await self._advance(view.run_id, event.id)

    async def _advance(self, run_id: str, event_id: int) -> int:
        async with self.engine.sessions() as session, session.begin():
            await repo_events.advance_outbox(session, run_id, event_id)
        return event_id

    async def _attach_output(
        self, view: RunView, event: IncidentEvent, channel: str, thread_ts: str
    ) -> None:
        """Output longer than the message shows goes to the thread as a file (from the log,
        not from `view`, which may predate the step's last lines)."""
        execution_id = event.data.get("execution_id", "")
        async with self.engine.sessions() as session:
            lines = await repo_events.all_output(session, view.run_id, execution_id)
        attempt = next((s.attempt for s in view.steps if s.execution_id == execution_id), 1)
        await self.budget.take(channel)
        await self.client.files_upload_v2(
            channel=channel, thread_ts=thread_ts, filename=f"{event.step}-output.log",
            title=f"Full output of {event.step} (attempt {attempt}, {len(lines)} lines)",
            content="\n".join(lines) + "\n",
        )

    async def _post_summary(self, view: RunView, channel: str, thread_ts: str) -> None:
        text, summary = blocks.run_summary(view)
        await self.budget.take(channel)
        await self.client.chat_postMessage(
            channel=channel, thread_ts=thread_ts, text=text, blocks=summary
        )
        async with self.engine.sessions() as session:
            events = await repo_events.all_events(session, view.run_id)
        await self.budget.take(channel)
        await self.client.files_upload_v2(
            channel=channel, thread_ts=thread_ts, filename=f"rollback-{view.run_id[:8]}.md",
            title="Incident timeline", content=timeline_markdown(view, events),
        )


def _digest(text: str, message_blocks: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps([text, message_blocks], sort_keys=True).encode()).hexdigest()


def _entry_goes_before(entry: IncidentEvent, step: StepView) -> bool:
    """Does a one-off entry belong in the thread before `step`'s (unposted) message? Attached
    output goes after its own step's message and before later steps' and later attempts'; the
    closing summary goes after every message."""
    if _closes(entry) or entry.step is None:
        return False
    own = StepName(entry.step)
    if step.step == own:
        return step.execution_id != entry.data.get("execution_id")
    return STEP_ORDER.index(step.step) > STEP_ORDER.index(own)


def _entry_goes_before_redraw(entry: IncidentEvent, step: StepView) -> bool:
    """Attached output goes before a status change of its own step's message or a later one:
    the file holds every line, the redraw only the newest."""
    if _closes(entry) or entry.step is None:
        return False
    return STEP_ORDER.index(step.step) >= STEP_ORDER.index(StepName(entry.step))


def _closes(entry: IncidentEvent) -> bool:
    """The run's closing summary: it goes after every message shows its final state."""
    return EventKind(entry.kind) in _FINAL_EVENTS
