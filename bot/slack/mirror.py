"""The Slack thread as a view of the incident log.

The engine only says "run X changed". The mirror redraws the status board and the step messages
from the database, writing at most about once a second per channel, and delivers the log's
one-off entries (attached output, summary, timeline) in order through a cursor kept in the
database: a Slack outage delays the thread, never a step, and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.db import repo_events, repo_runs
from bot.db.models import IncidentEvent
from bot.domain.events import EventKind
from bot.domain.states import StepStatus
from bot.domain.views import RunView
from bot.engine.engine import Engine
from bot.engine.view_builder import TAIL_LINES
from bot.slack import blocks

log = logging.getLogger(__name__)

_FINAL_EVENTS = frozenset({EventKind.RUN_COMPLETED, EventKind.RUN_ABORTED, EventKind.STEP_REJECTED})
WRITE_INTERVAL = 1.0  # Slack allows roughly one write per second per channel
RETRY_DELAY = 2.0


class WriteBudget:
    """Spaces writes to one channel at least `interval` seconds apart."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def take(self, channel: str) -> None:
        async with self._lock:
            now = time.monotonic()
            wait = self._next.get(channel, now) - now
            self._next[channel] = max(now, self._next.get(channel, now)) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


class ThreadMirror:
    def __init__(self, engine: Engine, client: AsyncWebClient, interval: float = WRITE_INTERVAL):
        self.engine = engine
        self.client = client
        self.budget = WriteBudget(interval)
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._sent: dict[str, str] = {}  # message key -> digest of what Slack shows
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=WRITE_INTERVAL)
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
        """Bring the thread up to date; True while a step is running (elapsed time ticks)."""
        view = await self.engine.run_view(run_id)
        channel = view.channel_id or self.engine.settings.rollback_channel
        thread_ts = view.thread_ts or await self._post_root(view, channel)
        await self._update(f"{run_id}:board", channel, thread_ts, *blocks.status_board(view))
        now = datetime.now(UTC)
        for step in view.steps:
            if step.execution_id is None:
                continue
            text, step_blocks = blocks.step_message(view, step, now)
            ts = await self._message_ts(step.execution_id)
            if ts is None:
                await self._post_step(view, step.execution_id, channel, thread_ts, text,
                                      step_blocks)
            else:
                await self._update(step.execution_id, channel, ts, text, step_blocks)
        await self._deliver_events(view, channel, thread_ts)
        return any(step.status is StepStatus.RUNNING for step in view.steps)

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

    async def _message_ts(self, execution_id: str) -> str | None:
        async with self.engine.sessions() as session:
            execution = await repo_runs.get_execution(session, execution_id)
            return execution.message_ts if execution else None

    async def _post_step(
        self, view: RunView, execution_id: str, channel: str, thread_ts: str, text: str,
        step_blocks: list[dict[str, Any]],
    ) -> None:
        async with self.engine.sessions() as session, session.begin():
            execution = await repo_runs.get_execution(session, execution_id, for_update=True)
            if execution is None or execution.message_ts:
                return
            await self.budget.take(channel)
            answer = await self.client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=text, blocks=step_blocks
            )
            await repo_runs.set_execution_message(session, execution_id, answer["ts"])
        self._sent[execution_id] = _digest(text, step_blocks)

    async def _update(
        self, key: str, channel: str, ts: str, text: str, message_blocks: list[dict[str, Any]]
    ) -> None:
        digest = _digest(text, message_blocks)
        if self._sent.get(key) == digest:
            return
        await self.budget.take(channel)
        await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=message_blocks)
        self._sent[key] = digest

    async def _deliver_events(self, view: RunView, channel: str, thread_ts: str) -> None:
        """One-off entries, in log order, each delivered once (the cursor is in the database)."""
        async with self.engine.sessions() as session:
            cursor = await repo_events.outbox_cursor(session, view.run_id)
            events = await repo_events.events_after(session, view.run_id, cursor, limit=500)
        delivered = cursor
        for event in events:
            kind = EventKind(event.kind)
            if kind in (EventKind.STEP_SUCCEEDED, EventKind.STEP_FAILED):
                delivered = await self._advance(view.run_id, delivered)
                await self._attach_output(view, event, channel, thread_ts)
            elif kind in _FINAL_EVENTS:
                delivered = await self._advance(view.run_id, delivered)
                # The run may have ended after `view` was read: summarise what is there now.
                await self._post_summary(await self.engine.run_view(view.run_id), channel,
                                         thread_ts)
            else:
                delivered = event.id  # nothing to send for this one
                continue
            delivered = await self._advance(view.run_id, event.id)
        await self._advance(view.run_id, delivered)

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
        if len(lines) <= TAIL_LINES:
            return
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
            title="Incident timeline", content=blocks.timeline_markdown(view, events),
        )


def _digest(text: str, message_blocks: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps([text, message_blocks], sort_keys=True).encode()).hexdigest()
