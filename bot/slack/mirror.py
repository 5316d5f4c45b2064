"""The Slack thread as a view of the incident log.

The engine only says "run X changed". The mirror snapshots the run and what the thread shows,
asks the pure schedule (`thread_schedule.next_write`) for the one write the thread needs most,
and performs it: at most about one write a second per channel, the log's one-off entries
(attached output, summary, timeline) delivered in order through a cursor kept in the database.
A Slack outage delays the thread, never a step, and loses nothing.

One replica writes a run's thread: the one holding its claim (`thread_claims`). Every replica
looks for runs to mirror once a second, so a change made by another replica, or a run whose
writer died, is picked up without being told. What Slack refuses for good is handled, not
retried (`mirror_refusals`); a write that keeps failing for a passing reason is set aside after
its retry budget so it never holds back the writes behind it for longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import repo_events, repo_mirror, repo_runs
from bot.domain.events import EventKind
from bot.domain.states import RunStatus
from bot.domain.steps import StepName
from bot.domain.views import RunView
from bot.engine.engine import Engine
from bot.engine.view_builder import TAIL_LINES, build_run_view
from bot.slack.mirror_refusals import Refusals
from bot.slack.mirror_writes import ThreadWrites
from bot.slack.slack_errors import Failure, classify, error_code, is_slack_failure
from bot.slack.thread_claims import ClaimLost, ThreadClaims
from bot.slack.thread_schedule import (
    Action,
    Drawn,
    NextWrite,
    PendingEntry,
    ThreadSnapshot,
    board_key,
    next_write,
    sends_something,
)

log = logging.getLogger(__name__)

WRITE_INTERVAL = 1.0  # Slack allows roughly one write per second per channel
RETRY_DELAY = 2.0
RETRY_BUDGET = 5  # tries of one write that fails for a passing reason before it is set aside
SET_ASIDE_SECONDS = 30.0  # then the writes behind it go first for this long


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
        self.claims = ThreadClaims(engine.sessions, engine.replica_id,
                                   engine.settings.step_lease_seconds)
        self.writes = ThreadWrites(engine.sessions, client, self.budget)
        self.refusals = Refusals(self)
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._drawn: dict[str, dict[str, Drawn]] = {}  # run -> message key -> what it shows
        self._tries: dict[str, int] = {}  # write key -> failed tries in a row
        self._set_aside: dict[str, float] = {}  # write key -> monotonic time it may go again
        self.moved_from: dict[str, str | None] = {}  # run -> link to the thread it left
        self.unwritable: dict[str, str] = {}  # run -> why its thread cannot be written
        self._task: asyncio.Task[None] | None = None
        self._engines: dict[str, Engine] = {}
        self.serve(engine)

    def serve(self, engine: Engine) -> None:
        """Mirror this target's runs too (one mirror, one channel budget, every target)."""
        self._engines[engine.target] = engine
        engine.subscribe(self.notify)

    def engine_for(self, target: str) -> Engine:
        """The engine of a run's target: what the mirror asks of a run (stopping it) only
        that target's engine may do."""
        return self._engines.get(target, self.engine)

    def notify(self, run_id: str) -> None:
        self._dirty.add(run_id)
        self._wake.set()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())
        self.claims.start()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.claims.stop()

    async def repost_board(self, run_id: str) -> None:
        """`/rollback-phase3 status`: the board is drawn again, and a thread that was lost
        (deleted, archived, the bot removed) gets a new root in the rollback channel."""
        await self.refusals.rehome_if_lost(run_id)
        self.forget_drawn(run_id, board_key(run_id))  # an edit of a deleted root shows it
        self.notify(run_id)

    async def _loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when it is
            # cancelled just as the event fires, and stop() would then wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WRITE_INTERVAL):
                    await self._wake.wait()
            self._wake.clear()
            runs, self._dirty = self._dirty, set()
            for run_id in dict.fromkeys([*await self.claims.candidates(), *sorted(runs)]):
                if not await self._hold(run_id):
                    continue  # another replica writes this thread
                try:
                    still_live = await self.sync(run_id)
                except ClaimLost:
                    log.warning("run %s: another replica writes its thread now", run_id)
                    continue
                except Exception as exc:
                    if is_slack_failure(exc):
                        log.warning("Slack is not taking writes (%s); retrying", exc)
                    else:
                        log.exception("could not mirror run %s", run_id)
                    self._dirty.add(run_id)
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                if still_live:  # keep the elapsed time of a running step moving
                    self._dirty.add(run_id)

    async def _hold(self, run_id: str) -> bool:
        before = set(self.claims.held)
        if not await self.claims.hold(run_id):
            return False
        if run_id not in before:  # taken (over): know nothing of the thread but the database
            log.info("replica %s writes the thread of run %s", self.claims.owner, run_id)
            self.writes.forget(run_id)
            self._drawn.pop(run_id, None)
        return True

    async def _read_thread_state(self, run_id: str) -> None:
        """Whether the run moved threads or cannot be written, as recorded (any replica may
        have recorded it: a `/rollback-phase3 status` typed anywhere moves a lost thread)."""
        async with self.engine.sessions() as session:
            moved, stuck = await repo_mirror.thread_state(session, run_id)
        self.moved_from[run_id] = moved
        if stuck:
            self.unwritable[run_id] = stuck
        else:
            self.unwritable.pop(run_id, None)

    async def drain(self) -> None:
        """Sync until nothing is pending (tests, shutdown); callers bound it with a timeout."""
        while self._dirty:
            for run_id in list(self._dirty):
                self._dirty.discard(run_id)
                if await self._hold(run_id):
                    await self.sync(run_id)

    # --- one pass ---------------------------------------------------------------------------

    async def sync(self, run_id: str) -> bool:
        """Bring the thread up to date, one write at a time, the most valuable first. A
        running step's clock and tail are redrawn once a pass, so a pass ends; True if there
        is more to draw (a step is running, or a redraw waits for the next pass)."""
        redrawn: set[str] = set()
        await self._read_thread_state(run_id)
        while True:
            if run_id in self.unwritable:
                return await self.refusals.stop_if_stuck(run_id)
            snapshot = await self._snapshot(run_id, frozenset(redrawn))
            write = next_write(snapshot)
            if write.action is Action.WAIT:
                # Sleep, then decide again from what the log says by then.
                await asyncio.sleep(write.wait)
                continue
            if write.action is Action.NOTHING:
                if not write.again and snapshot.view.status is not RunStatus.ACTIVE \
                        and snapshot.entry is None:
                    await self.claims.done(run_id)
                return write.again or bool(self._set_aside)
            await self.claims.confirm(run_id)  # fencing: still ours, in database time
            await self.perform(snapshot, write)
            redrawn.add(write.key)

    def channel_of(self, view: RunView) -> str:
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
            await self.advance(run_id, passed)
        now = time.monotonic()
        self._set_aside = {k: t for k, t in self._set_aside.items() if t > now}
        return ThreadSnapshot(
            view=view, now=datetime.now(UTC), posted=posted,
            drawn=dict(self._drawn.get(run_id, {})), entry=entry, redrawn=redrawn,
            budget_wait=self.budget.wait_seconds(self.channel_of(view)),
            set_aside=frozenset(self._set_aside),
            moved_from=self.moved_from.get(run_id))

    async def perform(self, snapshot: ThreadSnapshot, write: NextWrite,
                       plain: bool = False) -> None:
        """One write; a failure is classified: retried within its budget, or handled."""
        view = snapshot.view
        try:
            await self._write(view, write, plain)
        except Exception as exc:
            if not is_slack_failure(exc):
                raise
            self.writes.forget(view.run_id)  # it may have been applied: read before posting
            failure = classify(exc)
            if failure is not Failure.TRANSIENT:
                self._tries.pop(write.key, None)
                await self.refusals.handle(snapshot, write, failure, error_code(exc), plain)
                return
            tries = self._tries[write.key] = self._tries.get(write.key, 0) + 1
            if tries < RETRY_BUDGET:
                raise
            log.error("run %s: %s %s failed %d times (%s); the writes behind it go first",
                      view.run_id, write.action, write.key, tries, error_code(exc))
            self._tries.pop(write.key, None)
            self.set_aside(write.key)
            return
        self._tries.pop(write.key, None)

    async def _write(self, view: RunView, write: NextWrite, plain: bool) -> None:
        channel = self.channel_of(view)
        if write.action is Action.POST_ROOT:
            if await self.writes.post_root(view, channel, write, plain):
                self.record_drawn(view.run_id, write)
        elif write.action is Action.POST_STEP:
            if await self.writes.post_step(view, channel, write, plain):
                self.record_drawn(view.run_id, write)
        elif write.action is Action.EDIT:
            await self.writes.update(channel, write, plain)
            self.record_drawn(view.run_id, write)
        elif write.entry is not None:
            await self._deliver(view, write.entry, channel, plain)

    def set_aside(self, key: str) -> None:
        """Let the writes behind `key` go first for a while."""
        self._set_aside[key] = time.monotonic() + SET_ASIDE_SECONDS

    def record_drawn(self, run_id: str, write: NextWrite) -> None:
        if write.drawn is not None:
            self._drawn.setdefault(run_id, {})[write.key] = write.drawn

    def forget_drawn(self, run_id: str, key: str | None = None) -> None:
        """Draw a message again (None: every message of the run)."""
        if key is None:
            self._drawn.pop(run_id, None)
        else:
            self._drawn.get(run_id, {}).pop(key, None)

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
        self, view: RunView, entry: PendingEntry, channel: str, plain: bool
    ) -> None:
        """At least once to Slack, once in the thread: the cursor passes the entry only after
        Slack has taken it, and a retry finds what an unanswered try left there."""
        if entry.closes:
            # The run may have ended after `view` was read: summarise what is there now.
            await self.writes.post_summary(await self.engine.run_view(view.run_id), channel,
                                           plain)
        else:
            await self.writes.attach_output(view, entry, channel)
        await self.advance(view.run_id, entry.event_id)

    async def advance(self, run_id: str, event_id: int) -> int:
        async with self.engine.sessions() as session, session.begin():
            await repo_events.advance_outbox(session, run_id, event_id)
        return event_id
