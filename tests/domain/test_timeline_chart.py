"""The timeline picture's layout from an incident log: bars begin and end at the events' times,
marks sit at their events, and the whole run fits the plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.domain.states import RunStatus
from bot.domain.timeline_chart import RUN_ROW, BarKind, MarkKind, chart_layout, clock
from bot.domain.views import RunView

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


@dataclass
class Event:
    at: datetime
    kind: str
    step: str | None
    data: dict[str, Any] = field(default_factory=dict)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(finished: float | None, status: RunStatus = RunStatus.COMPLETED) -> RunView:
    return RunView(run_id="0123456789abcdef", status=status, initiator_id="U1",
                   initiator_name="carol", reason="r", created_at=T0,
                   finished_at=at(finished) if finished is not None else None, steps=())


# backup: waits 30 s, runs 10 s; downgrade: waits 20 s, fails after 5 s, waits 25 s for the
# retry and its approvals (reminded, paged on the way), runs 8 s; escalated from the run.
LOG = [
    Event(at(0), "run_started", None),
    Event(at(1), "plan_shown", "backup"),
    Event(at(31), "step_started", "backup"),
    Event(at(41), "step_succeeded", "backup"),
    Event(at(41.5), "plan_shown", "downgrade"),
    Event(at(50), "approval_reminded", "downgrade"),
    Event(at(61.5), "step_started", "downgrade"),
    Event(at(66.5), "step_failed", "downgrade"),
    Event(at(70), "page_sent", "downgrade"),
    Event(at(72), "escalated", None),
    Event(at(80), "retry_requested", "downgrade"),
    Event(at(80.2), "plan_shown", "downgrade"),
    Event(at(91.5), "step_started", "downgrade"),
    Event(at(99.5), "step_succeeded", "downgrade"),
    Event(at(100), "plan_shown", "restart"),
    Event(at(120), "run_aborted", "restart"),
    Event(at(5000), "follow_up_owned", None),  # after the run: not on the picture
]


def test_bars_start_and_end_at_their_events() -> None:
    layout = chart_layout(run(120, RunStatus.ABORTED), LOG)
    bars = [(b.row, b.kind, b.start, b.end, b.still_open) for b in layout.bars]
    assert bars == [
        ("backup", BarKind.WAITING, at(1), at(31), False),
        ("backup", BarKind.RUNNING, at(31), at(41), False),
        ("downgrade", BarKind.WAITING, at(41.5), at(61.5), False),
        ("downgrade", BarKind.FAILED, at(61.5), at(66.5), False),
        ("downgrade", BarKind.WAITING, at(66.5), at(91.5), False),  # retry decided, approved
        ("downgrade", BarKind.RUNNING, at(91.5), at(99.5), False),
        ("restart", BarKind.WAITING, at(100), at(120), False),  # ended by the abort
    ]
    marks = [(m.row, m.kind, m.at) for m in layout.marks]
    assert marks == [("downgrade", MarkKind.REMINDER, at(50)),
                     ("downgrade", MarkKind.PAGE, at(70)),
                     (RUN_ROW, MarkKind.ESCALATION, at(72))]
    assert layout.title == "Rollback 01234567: aborted in 2:00"
    labels = [row.label for row in layout.rows]
    assert labels == ["run", "1 backup", "2 downgrade x2", "3 restart", "4 new keys",
                      "5 email", "6 verify"]


def test_pixels_follow_time_and_rows() -> None:
    layout = chart_layout(run(120, RunStatus.ABORTED), LOG)
    plot, width = layout.plot, layout.plot.x1 - layout.plot.x0
    for bar in layout.bars:
        assert bar.box.x0 == plot.x0 + round((bar.start - T0).total_seconds() / 120 * width)
        assert bar.box.x1 >= bar.box.x0 + 4
        row = next(r for r in layout.rows if r.name == bar.row)
        assert row.y0 < bar.box.y0 < bar.box.y1 < row.y1
    last = layout.bars[-1]
    assert last.box.x1 == plot.x1  # the run's end is the plot's right edge
    assert [t.label for t in layout.ticks] == ["0s", "30s", "1:00", "1:30", "2:00"]
    assert layout.height > plot.y1 and layout.width == 1200


def test_a_run_still_going_ends_at_its_last_event_with_the_bar_open() -> None:
    layout = chart_layout(run(None, RunStatus.ACTIVE), LOG[:3])
    assert [(b.kind, b.end, b.still_open) for b in layout.bars] == [
        (BarKind.WAITING, at(31), False), (BarKind.RUNNING, at(31), True)]


def test_clock() -> None:
    assert [clock(s) for s in (0, 59.6, 61, 3599, 3600, 3725)] == \
        ["0s", "1:00", "1:01", "59:59", "1h00", "1h02"]
