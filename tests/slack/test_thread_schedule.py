"""The thread's schedule, case by case: each row is a moment of a run and what Slack shows then,
and the one write that must go next (the mirror only performs it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.events import EventKind
from bot.domain.states import RunStatus, StepStatus
from bot.domain.steps import STEP_ORDER, StepName
from bot.domain.views import PlanView, RunView, StepView
from bot.slack import blocks
from bot.slack.thread_schedule import (
    Action,
    Drawn,
    PendingEntry,
    ThreadSnapshot,
    board_key,
    digest,
    next_write,
    sends_something,
)

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
RUN = "11111111-1111-1111-1111-111111111111"
S = StepStatus


def step(name: StepName, status: StepStatus | None, attempt: int = 1,
         lines: tuple[str, ...] = ()) -> StepView:
    if status is None:
        return StepView(step=name, execution_id=None, attempt=0, status=None, plan=None)
    return StepView(
        step=name, execution_id=f"{name.value}-{attempt}", attempt=attempt, status=status,
        plan=PlanView(f"plan of {name.value}", (), (), f"fp-{name.value}"),
        started_at=NOW - timedelta(seconds=30) if status is not S.AWAITING_APPROVAL else None,
        finished_at=NOW if status in (S.SUCCEEDED, S.FAILED) else None,
        output_tail=lines, output_line_count=len(lines))


def run(*statuses: StepStatus | None, thread: bool = True,
        status: RunStatus = RunStatus.ACTIVE) -> RunView:
    padded = list(statuses) + [None] * (len(STEP_ORDER) - len(statuses))
    return RunView(
        run_id=RUN, status=status, initiator_id="U_ALICE", initiator_name="alice",
        reason="Phase 3 broke auth", created_at=NOW - timedelta(minutes=5), finished_at=None,
        steps=tuple(step(name, s) for name, s in zip(STEP_ORDER, padded, strict=True)),
        channel_id="C1", thread_ts="1.0" if thread else None)


def shown(view: RunView, *, except_posts: tuple[str, ...] = ()) -> ThreadSnapshot:
    """Every message the run has is posted and shows exactly what the log says."""
    posted: dict[str, str | None] = {}
    drawn = {board_key(view.run_id): Drawn(digest(*blocks.status_board(view)))}
    for s in view.steps:
        if s.execution_id is None:
            continue
        if s.execution_id in except_posts:
            posted[s.execution_id] = None
            continue
        posted[s.execution_id] = f"ts-{s.execution_id}"
        drawn[s.execution_id] = Drawn(digest(*blocks.step_message(view, s, NOW)), s.status)
    return ThreadSnapshot(view=view, now=NOW, posted=posted, drawn=drawn)


def then(snap: ThreadSnapshot, view: RunView) -> ThreadSnapshot:
    """The log moved on to `view`; Slack still shows what it showed (new executions unposted)."""
    posted = {s.execution_id: snap.posted.get(s.execution_id) for s in view.steps
              if s.execution_id is not None}
    return replace(snap, view=view, posted=posted)


def with_step(view: RunView, index: int, **change: object) -> RunView:
    steps = list(view.steps)
    steps[index] = replace(steps[index], **change)  # type: ignore[arg-type]
    return replace(view, steps=tuple(steps))


def output_of(name: StepName, attempt: int = 1, event_id: int = 40) -> PendingEntry:
    return PendingEntry(event_id, EventKind.STEP_SUCCEEDED, name, f"{name.value}-{attempt}")


CLOSED = PendingEntry(90, EventKind.RUN_COMPLETED)
B, D = StepName.BACKUP, StepName.DOWNGRADE
RUNNING_WITH_LINES = with_step(run(S.RUNNING), 0, output_tail=("line 1",), output_line_count=1)
ENDED = run(S.SUCCEEDED, S.AWAITING_APPROVAL)
Case = Callable[[], ThreadSnapshot]

CASES: list[tuple[str, Case, Action, str]] = [
    ("no thread: the board is posted as its root, before anything else",
     lambda: replace(shown(run(S.AWAITING_APPROVAL)), view=run(S.AWAITING_APPROVAL,
                                                                thread=False)),
     Action.POST_ROOT, f"{RUN}:board"),
    ("a step's request for approval is posted once the root exists",
     lambda: shown(run(S.AWAITING_APPROVAL), except_posts=("backup-1",)),
     Action.POST_STEP, "backup-1"),
    ("the thread shows the log: nothing to write",
     lambda: shown(run(S.AWAITING_APPROVAL)), Action.NOTHING, ""),
    ("a step's status changed: its message is redrawn",
     lambda: then(shown(run(S.AWAITING_APPROVAL)), run(S.RUNNING)), Action.EDIT, "backup-1"),
    ("new lines of a running step: a tick",
     lambda: then(shown(run(S.RUNNING)), RUNNING_WITH_LINES), Action.EDIT, "backup-1"),
    ("a tick already drawn this pass waits for the next pass",
     lambda: replace(then(shown(run(S.RUNNING)), RUNNING_WITH_LINES),
                     redrawn=frozenset({"backup-1"})), Action.NOTHING, ""),
    ("the board goes before a tick",
     lambda: replace(then(shown(run(S.RUNNING)), RUNNING_WITH_LINES), drawn={
         "backup-1": Drawn("old", S.RUNNING)}), Action.EDIT, f"{RUN}:board"),
    ("a step ended with long output: the file goes first",
     lambda: replace(then(shown(run(S.RUNNING)), ENDED), entry=output_of(B)),
     Action.UPLOAD_OUTPUT, "entry:40"),
    ("then the step's final state, before the next step's message",
     lambda: then(shown(run(S.RUNNING)), ENDED), Action.EDIT, "backup-1"),
    ("then the next step's message, before the board",
     lambda: replace(then(shown(run(S.RUNNING)), ENDED), drawn={
         **shown(ENDED).drawn, board_key(RUN): Drawn("old")}),
     Action.POST_STEP, "downgrade-1"),
    ("then the board",
     lambda: replace(shown(ENDED), drawn={**shown(ENDED).drawn, board_key(RUN): Drawn("old")}),
     Action.EDIT, f"{RUN}:board"),
    ("attached output goes before the board",
     lambda: replace(shown(ENDED), entry=output_of(B),
                     drawn={**shown(ENDED).drawn, board_key(RUN): Drawn("old")}),
     Action.UPLOAD_OUTPUT, "entry:40"),
    ("a file goes after its own step's message: the message is posted first",
     lambda: replace(shown(run(S.SUCCEEDED), except_posts=("backup-1",)), entry=output_of(B)),
     Action.POST_STEP, "backup-1"),
    ("a failed attempt's file goes before the retry's message",
     lambda: replace(then(shown(run(S.FAILED)), with_step(run(S.AWAITING_APPROVAL), 0,
                                                           execution_id="backup-2", attempt=2)),
                     entry=PendingEntry(40, EventKind.STEP_FAILED, B, "backup-1")),
     Action.UPLOAD_OUTPUT, "entry:40"),
    ("a later step's file goes before that step's status change",
     lambda: replace(then(shown(run(S.SUCCEEDED, S.RUNNING)), run(S.SUCCEEDED, S.SUCCEEDED,
                                                                    S.AWAITING_APPROVAL)),
                     entry=output_of(D)), Action.UPLOAD_OUTPUT, "entry:40"),
    ("but not before an earlier step's status change",
     lambda: replace(then(shown(run(S.RUNNING, S.RUNNING)), run(S.SUCCEEDED, S.SUCCEEDED)),
                     entry=output_of(D)), Action.EDIT, "backup-1"),
    ("the final redraw waits for the log: summary only after every message's final state",
     lambda: replace(then(shown(run(S.RUNNING)), run(S.SUCCEEDED, status=RunStatus.COMPLETED)),
                     entry=CLOSED), Action.EDIT, "backup-1"),
    ("the board's final state goes before the summary too",
     lambda: replace(shown(run(S.SUCCEEDED, status=RunStatus.COMPLETED)), entry=CLOSED,
                     drawn={**shown(run(S.SUCCEEDED)).drawn, board_key(RUN): Drawn("old")}),
     Action.EDIT, f"{RUN}:board"),
    ("a tick drawn this pass holds the summary back to the next pass",
     lambda: replace(then(shown(run(S.RUNNING)), RUNNING_WITH_LINES), entry=CLOSED,
                     redrawn=frozenset({"backup-1"})), Action.NOTHING, ""),
    ("every message final: the summary and the timeline",
     lambda: replace(shown(run(S.SUCCEEDED, status=RunStatus.COMPLETED)), entry=CLOSED),
     Action.SUMMARY, "entry:90"),
    ("a write due while the budget says not yet: wait, then decide again",
     lambda: replace(shown(run(S.AWAITING_APPROVAL), except_posts=("backup-1",)),
                     budget_wait=0.4), Action.WAIT, "backup-1"),
    ("nothing due: the budget does not matter",
     lambda: replace(shown(run(S.AWAITING_APPROVAL)), budget_wait=0.4), Action.NOTHING, ""),
    ("a file set aside after its retry budget does not hold the thread back",
     lambda: replace(then(shown(run(S.RUNNING)), ENDED), entry=output_of(B),
                     set_aside=frozenset({"entry:40"})), Action.EDIT, "backup-1"),
    ("a message set aside after its retry budget does not hold the next one back",
     lambda: replace(then(shown(run(S.RUNNING)), ENDED), set_aside=frozenset({"backup-1"})),
     Action.POST_STEP, "downgrade-1"),
]


@pytest.mark.parametrize(("case", "snapshot", "action", "key"), CASES,
                         ids=[c[0] for c in CASES])
def test_next_write(case: str, snapshot: Case, action: Action, key: str) -> None:
    write = next_write(snapshot())
    assert (write.action, write.key) == (action, key), write.reason
    assert write.reason


def test_a_running_step_asks_to_be_drawn_again() -> None:
    assert next_write(shown(run(S.RUNNING))).again
    assert not next_write(shown(run(S.SUCCEEDED, S.AWAITING_APPROVAL))).again


def test_a_post_records_what_the_message_then_shows() -> None:
    view = run(S.AWAITING_APPROVAL)
    write = next_write(shown(view, except_posts=("backup-1",)))
    assert write.drawn == shown(view).drawn["backup-1"]


def test_an_edit_shows_the_log_as_of_the_snapshot() -> None:
    write = next_write(then(shown(run(S.RUNNING)), ENDED))
    assert write.ts == "ts-backup-1" and write.message is not None
    assert write.message.text.endswith("succeeded")


@pytest.mark.parametrize(
    ("kind", "lines", "sends"),
    [
        (EventKind.STEP_SUCCEEDED, 13, True),
        (EventKind.STEP_FAILED, 500, True),
        (EventKind.STEP_SUCCEEDED, 12, False),  # the message shows it whole
        (EventKind.STEP_ALREADY_DONE, 500, False),
        (EventKind.STEP_OUTPUT, 500, False),
        (EventKind.APPROVAL_GIVEN, 0, False),
        (EventKind.RUN_COMPLETED, 0, True),
        (EventKind.RUN_ABORTED, 0, True),
        (EventKind.STEP_REJECTED, 0, True),
    ],
)
def test_which_log_entries_put_something_in_the_thread(
    kind: EventKind, lines: int, sends: bool
) -> None:
    assert sends_something(kind, lines, tail_lines=12) is sends


def test_a_run_that_left_a_lost_thread_says_so_on_its_new_board() -> None:
    view = run(S.AWAITING_APPROVAL, thread=False)
    link = "https://slack.com/archives/C1/p1000"
    write = next_write(replace(shown(view), moved_from=link))
    assert write.action is Action.POST_ROOT and write.message is not None
    assert link in json.dumps(write.message.blocks)
    assert "continues here" in json.dumps(write.message.blocks)
