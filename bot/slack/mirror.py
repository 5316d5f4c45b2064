"""The Slack thread as a view of the incident log.

The engine only says "run X changed". The mirror snapshots the run and what the thread shows,
asks the pure schedule (`thread_schedule.next_write`) for the one write the thread needs most,
and performs it: at most about one write a second per channel, the log's one-off entries
(attached output, summary, timeline) delivered in order through a cursor kept in the database.
A Slack outage delays the thread, never a step, and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import repo_events, repo_runs
from bot.domain.events import EventKind
from bot.domain.steps import StepName
from bot.domain.timeline import timeline_markdown
from bot.domain.views import RunView
from bot.engine.engine import Engine
from bot.engine.view_builder import TAIL_LINES, build_run_view
from bot.slack import blocks
from bot.slack.thread_schedule import (
    Action,
    Drawn,
    NextWrite,
    PendingEntry,
    ThreadSnapshot,
    next_write,
    sends_something,
)

log = logging.getLogger(__name__)

WRITE_INTERVAL = 1.0  # Slack allows roughly one write per second per channel
RETRY_DELAY = 2.0


class WriteBudget:
    """Spaces writes to one channel at least `interval` seconds apart."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._lock = asyncio.Lock()

    def wait_seconds(self, channel: str) -> float:
        """How long until a write to `channel` could go out at once (reserving nothing, so
        that what is written can be decided when it is sent)."""
        return max(0.0, self._next.get(channel, 0.0) - time.monotonic())

    async def take(self, channel: str) -> None:
        async with self._lock:
            now = time.monotonic()
            wait = self._next.get(channel, now) - now
            self._next[channel] = max(now, self._next.get(channel, now)) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


class ThreadMirror:
    """Snapshots, asks the schedule, writes. The order of the thread is the schedule's."""

    def __init__(self, engine: Engine, client: AsyncWebClient, interval: float = WRITE_INTERVAL):
        self.engine = engine
        self.client = client
        self.budget = WriteBudget(interval)
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._drawn: dict[str, Drawn] = {}  # message key -> what Slack shows
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
            snapshot = await self._snapshot(run_id, frozenset(redrawn))
            write = next_write(snapshot)
            if write.action is Action.WAIT:
                # Sleep, then decide again from what the log says by then.
                await asyncio.sleep(write.wait)
                continue
            if write.action is Action.NOTHING:
                return write.again
            await self._perform(snapshot, write)
            redrawn.add(write.key)

    def _channel(self, view: RunView) -> str:
        return view.channel_id or self.engine.settings.rollback_channel

    async def _snapshot(self, run_id: str, redrawn: frozenset[str]) -> ThreadSnapshot:
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
        return ThreadSnapshot(
            view=view, now=utcnow(), posted=posted, drawn=dict(self._drawn), entry=entry,
            redrawn=redrawn, budget_wait=self.budget.wait_seconds(self._channel(view)))

    async def _perform(self, snapshot: ThreadSnapshot, write: NextWrite) -> None:
        view = snapshot.view
        channel = self._channel(view)
        if write.action is Action.POST_ROOT:
            await self._post_root(view, channel, write)
            return
        assert view.thread_ts is not None
        if write.action is Action.POST_STEP:
            await self._post_step(channel, view.thread_ts, write)
        elif write.action is Action.EDIT:
            await self._update(channel, write)
        elif write.entry is not None:
            await self._deliver(view, write.entry, channel, view.thread_ts)

    # --- writes -----------------------------------------------------------------------------

    async def _post_root(self, view: RunView, channel: str, write: NextWrite) -> None:
        assert write.message is not None and write.drawn is not None
        async with self.engine.sessions() as session, session.begin():
            run = await repo_runs.get_run(session, view.run_id, for_update=True)
            if run is not None and run.thread_ts:  # another replica posted it meanwhile
                return
            await self.budget.take(channel)
            answer = await self.client.chat_postMessage(
                channel=channel, text=write.message.text, blocks=write.message.blocks)
            await repo_runs.set_run_thread(session, view.run_id, answer["channel"], answer["ts"])
        self._drawn[write.key] = write.drawn

    async def _post_step(self, channel: str, thread_ts: str, write: NextWrite) -> None:
        assert write.step is not None and write.step.execution_id is not None
        assert write.message is not None and write.drawn is not None
        async with self.engine.sessions() as session, session.begin():
            execution = await repo_runs.get_execution(session, write.step.execution_id,
                                                      for_update=True)
            if execution is None or execution.message_ts:
                return
            await self.budget.take(channel)
            answer = await self.client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=write.message.text,
                blocks=write.message.blocks)
            await repo_runs.set_execution_message(session, write.step.execution_id,
                                                  answer["ts"])
        self._drawn[write.key] = write.drawn

    async def _update(self, channel: str, write: NextWrite) -> None:
        assert write.message is not None and write.drawn is not None and write.ts
        await self.budget.take(channel)
        await self.client.chat_update(channel=channel, ts=write.ts, text=write.message.text,
                                      blocks=write.message.blocks)
        self._drawn[write.key] = write.drawn

    # --- one-off entries (the outbox) ---------------------------------------------------------

    async def _next_entry(
        self, session: AsyncSession, run_id: str
    ) -> tuple[PendingEntry | None, int | None]:
        """The first entry after the cursor that puts something in the thread, and the last
        entry before it (None: none) that has nothing to send, for the cursor to pass."""
        cursor = skipped = await repo_events.outbox_cursor(session, run_id)
        while True:
            events = await repo_events.events_after(session, run_id, skipped, limit=500)
            for event in events:
                kind = EventKind(event.kind)
                execution_id = event.data.get("execution_id")
                count = (event.data.get("facts") or {}).get("output_lines")
                if not isinstance(count, int):
                    count = 0
                    if kind in (EventKind.STEP_SUCCEEDED, EventKind.STEP_FAILED):
                        _, count = await repo_events.output_summary(
                            session, run_id, execution_id or "", 1)
                if sends_something(kind, count, TAIL_LINES):
                    return PendingEntry(
                        event.id, kind, StepName(event.step) if event.step else None,
                        execution_id), (skipped if skipped != cursor else None)
                skipped = event.id
            if len(events) < 500:
                return None, (skipped if skipped != cursor else None)

    async def _deliver(
        self, view: RunView, entry: PendingEntry, channel: str, thread_ts: str
    ) -> None:
        """At least once: the cursor passes the entry only after Slack has taken it."""
        if entry.closes:
            # The run may have ended after `view` was read: summarise what is there now.
            await self._post_summary(await self.engine.run_view(view.run_id), channel,
                                     thread_ts)
        else:
            await self._attach_output(view, entry, channel, thread_ts)
        await self._advance(view.run_id, entry.event_id)

    async def _advance(self, run_id: str, event_id: int) -> int:
        async with self.engine.sessions() as session, session.begin():
            await repo_events.advance_outbox(session, run_id, event_id)
        return event_id

    async def _attach_output(
        self, view: RunView, entry: PendingEntry, channel: str, thread_ts: str
    ) -> None:
        """Output longer than the message shows goes to the thread as a file (from the log,
        not from `view`, which may predate the step's last lines)."""
        execution_id = entry.execution_id or ""
        async with self.engine.sessions() as session:
            lines = await repo_events.all_output(session, view.run_id, execution_id)
        attempt = next((s.attempt for s in view.steps if s.execution_id == execution_id), 1)
        await self.budget.take(channel)
        await self.client.files_upload_v2(
            channel=channel, thread_ts=thread_ts, filename=f"{entry.step}-output.log",
            title=f"Full output of {entry.step} (attempt {attempt}, {len(lines)} lines)",
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


def utcnow() -> datetime:
    return datetime.now(UTC)
