"""What the Slack thread gets next: a pure function of a snapshot, no I/O.

The mirror reads a snapshot — the run as the log has it, which step messages are posted (their
ts), what each message last showed, the next one-off log entry still to deliver, what this pass
already redrew, how long the write budget says to wait — and asks `next_write`. It answers with
exactly one write (or a wait, or nothing) and why; the mirror only performs it. Every ordering
rule of the thread lives here, so each one is a row in a table test
(`tests/slack/test_thread_schedule.py`), not an integration test against a fake Slack.

The order of value, each drawn from the log when its turn comes:
1. the root (the status board) — nothing can go in a thread before it exists;
2. in thread order: a step message not yet posted; a step message whose status changed (its
   final state); attached output goes before its own step's status change and before any later
   step's message, because the file holds every line and a redraw only the newest;
3. any other pending attached output;
4. the status board;
5. redraws that keep a running step's status (new lines, approvals, the clock), once a pass;
6. the closing summary and timeline, once every message shows its final state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from bot.domain.events import EventKind
from bot.domain.states import StepStatus
from bot.domain.steps import STEP_ORDER, StepName
from bot.domain.views import RunView, StepView
from bot.slack import blocks

# Log entries that put something in the thread at the end of a run.
CLOSING_EVENTS = frozenset({EventKind.RUN_COMPLETED, EventKind.RUN_ABORTED,
                            EventKind.STEP_REJECTED})
# Entries whose output may need attaching: a step that ended.
ENDING_EVENTS = frozenset({EventKind.STEP_SUCCEEDED, EventKind.STEP_FAILED})


class Action(StrEnum):
    POST_ROOT = "post_root"
    POST_STEP = "post_step"
    EDIT = "edit"
    UPLOAD_OUTPUT = "upload_output"
    SUMMARY = "summary"  # the closing summary, then the timeline
    WAIT = "wait"  # a write is due, the budget says not yet
    NOTHING = "nothing"


class Rank:
    """Among redraws of posted messages, lower goes first."""

    STATUS_MOVED = 0  # a step message whose status changed
    BOARD = 1
    TICK = 2  # same status, new lines, approvals or clock: once a pass


@dataclass(frozen=True)
class Drawn:
    """What a message last showed in Slack: the digest of its drawing and the step status."""

    digest: str
    status: StepStatus | None = None


@dataclass(frozen=True)
class PendingEntry:
    """The next entry of the log after the outbox cursor that puts something in the thread."""

    event_id: int
    kind: EventKind
    step: StepName | None = None
    execution_id: str | None = None

    @property
    def key(self) -> str:
        return f"entry:{self.event_id}"

    @property
    def closes(self) -> bool:
        return self.kind in CLOSING_EVENTS


@dataclass(frozen=True)
class ThreadSnapshot:
    view: RunView
    now: datetime
    posted: Mapping[str, str | None] = field(default_factory=dict)  # execution id -> ts
    drawn: Mapping[str, Drawn] = field(default_factory=dict)  # message key -> last drawing
    entry: PendingEntry | None = None
    redrawn: frozenset[str] = frozenset()  # keys this pass has written already
    budget_wait: float = 0.0  # seconds until the channel's write budget allows one
    set_aside: frozenset[str] = frozenset()  # keys whose writes exhausted their retry budget
    moved_from: str | None = None  # permalink of the thread the run had to leave


@dataclass(frozen=True)
class Rendered:
    text: str
    blocks: list[dict[str, Any]]

    @property
    def digest(self) -> str:
        return digest(self.text, self.blocks)


@dataclass(frozen=True)
class NextWrite:
    action: Action
    reason: str
    key: str = ""
    step: StepView | None = None
    entry: PendingEntry | None = None
    ts: str | None = None  # the message an edit rewrites
    message: Rendered | None = None  # what a post or an edit shows
    wait: float = 0.0  # WAIT: seconds
    again: bool = False  # NOTHING: a later pass has more to draw (a clock, a deferred tick)

    @property
    def drawn(self) -> Drawn | None:
        """What the message shows once this write is done (None: not a message drawing)."""
        if self.message is None:
            return None
        return Drawn(self.message.digest, self.step.status if self.step else None)


def board_key(run_id: str) -> str:
    return f"{run_id}:board"


def digest(text: str, message_blocks: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps([text, message_blocks], sort_keys=True).encode()).hexdigest()


def board_drawing(view: RunView, moved_from: str | None) -> Rendered:
    """The status board; once the run had to leave a lost thread, it says so and links back."""
    text, board = blocks.status_board(view)
    if moved_from:
        board = [*board, {"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f":leftwards_arrow_with_hook: The rollback continues here; its first thread "
            f"could no longer be written: <{moved_from}|earlier thread>")}]}]
    return Rendered(text, board)


def sends_something(kind: EventKind, output_lines: int, tail_lines: int) -> bool:
    """Does a log entry put anything in the thread? The run's end does; a step's end does when
    its output is longer than the message shows (it is attached as a file)."""
    if kind in CLOSING_EVENTS:
        return True
    return kind in ENDING_EVENTS and output_lines > tail_lines


def entry_goes_before_post(entry: PendingEntry, step: StepView) -> bool:
    """Does an entry belong in the thread before `step`'s (unposted) message? Attached output
    goes after its own step's message and before later steps' and later attempts'; the closing
    summary goes after every message."""
    if entry.closes or entry.step is None:
        return False
    if step.step == entry.step:
        return step.execution_id != entry.execution_id
    return STEP_ORDER.index(step.step) > STEP_ORDER.index(entry.step)


def entry_goes_before_redraw(entry: PendingEntry, step: StepView) -> bool:
    """Attached output goes before a status change of its own step's message or a later one:
    the file holds every line, the redraw only the newest."""
    if entry.closes or entry.step is None:
        return False
    return STEP_ORDER.index(step.step) >= STEP_ORDER.index(entry.step)


def next_write(snapshot: ThreadSnapshot) -> NextWrite:
    """The one write the thread needs most now; WAIT when it is due but the budget says not
    yet; NOTHING when the thread shows the log (`again`: a later pass has more to draw)."""
    decision = _most_valuable(snapshot)
    if decision.action is Action.NOTHING or snapshot.budget_wait <= 0:
        return decision
    return NextWrite(Action.WAIT, f"write budget: {decision.action.value} {decision.key} next",
                     key=decision.key, wait=snapshot.budget_wait)


def _most_valuable(snap: ThreadSnapshot) -> NextWrite:
    view = snap.view
    if not view.thread_ts:
        return NextWrite(Action.POST_ROOT, "no thread yet: the board is its root",
                         key=board_key(view.run_id),
                         message=board_drawing(view, snap.moved_from))
    entry = snap.entry if snap.entry and snap.entry.key not in snap.set_aside else None
    redraws = _redraws(snap)
    moved = {w.key: w for rank, _, w in redraws if rank == Rank.STATUS_MOVED}
    for step in view.steps:  # in thread order: messages, attached output, status changes
        if step.execution_id is None or step.execution_id in snap.set_aside:
            continue
        if not snap.posted.get(step.execution_id):
            if entry is not None and entry_goes_before_post(entry, step):
                return _deliver(entry, f"its output goes before the message of {step.step}")
            text, step_blocks = blocks.step_message(view, step, snap.now)
            return NextWrite(Action.POST_STEP, f"{step.step} attempt {step.attempt} has no "
                             "message yet", key=step.execution_id, step=step,
                             message=Rendered(text, step_blocks))
        if step.execution_id in moved:
            if entry is not None and entry_goes_before_redraw(entry, step):
                return _deliver(entry, f"its output goes before {step.step}'s new status")
            return moved[step.execution_id]
    if entry is not None and not entry.closes:
        return _deliver(entry, "attached output goes before the board and ticks")
    ready = [(rank, order, w) for rank, order, w in redraws
             if rank < Rank.TICK or w.key not in snap.redrawn]
    if ready:
        return min(ready, key=lambda r: r[:2])[2]
    if redraws:  # only ticks this pass has drawn already; the summary waits for them too
        return NextWrite(Action.NOTHING, "ticks wait for the next pass", again=True)
    if entry is not None:
        return _deliver(entry, "every message shows its final state")
    running = any(s.status is StepStatus.RUNNING for s in view.steps)
    return NextWrite(Action.NOTHING, "the thread shows the log"
                     + ("; a step's clock keeps moving" if running else ""), again=running)


def _deliver(entry: PendingEntry, reason: str) -> NextWrite:
    action = Action.SUMMARY if entry.closes else Action.UPLOAD_OUTPUT
    return NextWrite(action, reason, key=entry.key, entry=entry)


def _redraws(snap: ThreadSnapshot) -> list[tuple[int, int, NextWrite]]:
    """Every posted message Slack shows differently from the log, ranked."""
    view = snap.view
    redraws: list[tuple[int, int, NextWrite]] = []
    key = board_key(view.run_id)
    board = board_drawing(view, snap.moved_from)
    shown = snap.drawn.get(key)
    if key not in snap.set_aside and (shown is None or shown.digest != board.digest):
        redraws.append((Rank.BOARD, 0, NextWrite(
            Action.EDIT, "the board is behind the log", key=key, ts=view.thread_ts,
            message=board)))
    for order, step in enumerate(view.steps):
        ts = snap.posted.get(step.execution_id or "")
        if step.execution_id is None or ts is None or step.execution_id in snap.set_aside:
            continue
        text, step_blocks = blocks.step_message(view, step, snap.now)
        shown = snap.drawn.get(step.execution_id)
        if shown is not None and shown.digest == digest(text, step_blocks):
            continue
        status_moved = shown is None or shown.status != step.status
        redraws.append((Rank.STATUS_MOVED if status_moved else Rank.TICK, order, NextWrite(
            Action.EDIT, f"{step.step} now {step.status}" if status_moved
            else f"{step.step}: new lines, approvals or clock", key=step.execution_id,
            step=step, ts=ts, message=Rendered(text, step_blocks))))
    return redraws
