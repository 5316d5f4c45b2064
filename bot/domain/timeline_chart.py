"""The run as a picture: where each bar and mark of the timeline PNG goes, from the incident log.

Pure: every start and end comes from an event's time (the log is the record; the picture only
draws it), and every coordinate is computed here, so that a test can hold the picture against
the log without reading pixels. `bot/charts/timeline_png.py` only paints what this says.

One row per step. A step's row holds its bars in the order they happened: waiting for approval
(the plan put up → the step started; after a failure, until the retry started), running (→
done), failed (running → failed or interrupted). Pages, escalations and reminders are marks at
their time on their step's row, or on the "run" row above when they belong to no step. The
picture spans the run, from its start to its end (or its last event while it goes on); what the
log records after the end (a follow-up owned days later) is not on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from bot.domain.steps import STEP_ORDER, StepName, step_number
from bot.domain.views import RunView

WIDTH = 1200  # px: a phone shows it at a third, and the text stays readable
LABEL_WIDTH = 330
RIGHT_MARGIN = 50
HEADER_HEIGHT = 150
ROW_HEIGHT = 84
BAR_HEIGHT = 46
AXIS_HEIGHT = 70
LEGEND_HEIGHT = 130
MIN_BAR_PX = 4  # a step of a tenth of a second still shows
RUN_ROW = "run"
SHORT_TITLES = {StepName.BACKUP: "backup", StepName.DOWNGRADE: "downgrade",
                StepName.RESTART: "restart", StepName.ROTATE_KEYS: "new keys",
                StepName.EMAIL_CLIENTS: "email", StepName.VERIFY: "verify"}


class ChartEvent(Protocol):
    at: datetime
    kind: str
    step: str | None
    data: dict[str, Any]


class BarKind(StrEnum):
    WAITING = "waiting for approval"
    RUNNING = "running"
    FAILED = "failed"


class MarkKind(StrEnum):
    PAGE = "page"
    ESCALATION = "escalation"
    REMINDER = "reminder"


MARK_OF_EVENT = {"page_sent": MarkKind.PAGE, "page_failed": MarkKind.PAGE,
                 "escalated": MarkKind.ESCALATION, "approval_reminded": MarkKind.REMINDER,
                 "approval_overdue": MarkKind.REMINDER}


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int


@dataclass(frozen=True)
class Bar:
    row: str  # a step name
    kind: BarKind
    start: datetime
    end: datetime
    still_open: bool  # the run was drawn before this part ended
    box: Box

    def as_data(self) -> dict[str, Any]:
        return {"row": self.row, "kind": self.kind.value, "start": self.start.isoformat(),
                "end": self.end.isoformat(), "open": self.still_open,
                "box": [self.box.x0, self.box.y0, self.box.x1, self.box.y1]}


@dataclass(frozen=True)
class Mark:
    row: str  # a step name, or RUN_ROW
    kind: MarkKind
    at: datetime
    x: int
    y: int


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    y0: int
    y1: int


@dataclass(frozen=True)
class Tick:
    x: int
    label: str


@dataclass(frozen=True)
class ChartLayout:
    width: int
    height: int
    title: str
    subtitle: str
    plot: Box
    rows: tuple[Row, ...]
    bars: tuple[Bar, ...]
    marks: tuple[Mark, ...]
    ticks: tuple[Tick, ...]
    legend_top: int

    def as_data(self) -> dict[str, Any]:
        """What the picture shows, as data (written into the PNG beside the pixels)."""
        return {"width": self.width, "height": self.height,
                "bars": [bar.as_data() for bar in self.bars],
                "marks": [{"row": m.row, "kind": m.kind.value, "at": m.at.isoformat()}
                          for m in self.marks]}


@dataclass
class _Span:
    kind: BarKind
    start: datetime


def _spans(events: list[ChartEvent], end: datetime
           ) -> list[tuple[str, BarKind, datetime, datetime, bool]]:
    """(step, kind, start, end, still open) for every bar, in the order they began."""
    open_spans: dict[str, _Span] = {}
    done: list[tuple[str, BarKind, datetime, datetime, bool]] = []

    def close(step: str, at: datetime, kind: BarKind | None = None) -> None:
        span = open_spans.pop(step, None)
        if span is not None:
            done.append((step, kind or span.kind, span.start, max(at, span.start), False))

    def open_(step: str, kind: BarKind, at: datetime) -> None:
        close(step, at)
        open_spans[step] = _Span(kind, at)

    for e in events:
        step = e.step
        if e.kind in ("run_aborted", "run_completed"):
            for name in list(open_spans):
                close(name, e.at)
        if step is None:
            continue
        if e.kind == "plan_shown" and step not in open_spans:
            open_(step, BarKind.WAITING, e.at)
        elif e.kind in ("step_started", "resend_started"):
            open_(step, BarKind.RUNNING, e.at)
        elif e.kind in ("step_succeeded", "step_already_done"):
            close(step, e.at, BarKind.RUNNING)
        elif e.kind == "resend_finished":
            close(step, e.at, BarKind.FAILED if e.data.get("status") == "failed"
                  else BarKind.RUNNING)
        elif e.kind in ("step_failed", "step_interrupted"):
            running = open_spans.get(step)
            close(step, e.at, BarKind.FAILED if running and running.kind is BarKind.RUNNING
                  else None)
            open_spans[step] = _Span(BarKind.WAITING, e.at)  # for a retry, or an abort
        elif e.kind == "step_rejected":
            close(step, e.at)
    for name, span in open_spans.items():
        done.append((name, span.kind, span.start, max(end, span.start), True))
    return sorted(done, key=lambda part: part[2])


def _tick_step(seconds: float) -> int:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400):
        if seconds / step <= 6:
            return step
    return 28800


def clock(seconds: float) -> str:
    """Time since the run began, as people read it off an axis: 45s, 3:20, 1h05."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}:{whole % 60:02d}"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}"


def chart_layout(run: RunView, events: Iterable[ChartEvent]) -> ChartLayout:
    ordered = sorted(events, key=lambda e: e.at)
    start = run.created_at
    end = run.finished_at or max((e.at for e in ordered), default=start)
    within = [e for e in ordered if e.at <= end]
    span_seconds = max((end - start).total_seconds(), 1.0)
    plot = Box(LABEL_WIDTH, HEADER_HEIGHT, WIDTH - RIGHT_MARGIN,
               HEADER_HEIGHT + ROW_HEIGHT * (len(STEP_ORDER) + 1))

    def x_of(at: datetime) -> int:
        fraction = (at - start).total_seconds() / span_seconds
        return plot.x0 + round(min(max(fraction, 0.0), 1.0) * (plot.x1 - plot.x0))

    names = [RUN_ROW, *(step.value for step in STEP_ORDER)]
    attempts = _attempts(within)
    rows = tuple(Row(name, _label(name, attempts.get(name, 0)),
                     plot.y0 + i * ROW_HEIGHT, plot.y0 + (i + 1) * ROW_HEIGHT)
                 for i, name in enumerate(names))
    row_of = {row.name: row for row in rows}
    bars = []
    for step, kind, bar_start, bar_end, still_open in _spans(within, end):
        row = row_of.get(step)
        if row is None:
            continue
        x0 = x_of(bar_start)
        x1 = max(x_of(bar_end), x0 + MIN_BAR_PX)
        middle = (row.y0 + row.y1) // 2
        bars.append(Bar(step, kind, bar_start, bar_end, still_open,
                        Box(x0, middle - BAR_HEIGHT // 2, x1, middle + BAR_HEIGHT // 2)))
    marks = []
    for e in within:
        mark = MARK_OF_EVENT.get(e.kind)
        if mark is None:
            continue
        row = row_of.get(e.step or RUN_ROW, row_of[RUN_ROW])
        marks.append(Mark(row.name, mark, e.at, x_of(e.at), row.y0 + 14))
    every = _tick_step(span_seconds)
    ticks = tuple(Tick(plot.x0 + round(s / span_seconds * (plot.x1 - plot.x0)), clock(s))
                  for s in range(0, int(span_seconds) + 1, every))
    state = run.status.value.replace("_", " ")
    return ChartLayout(
        width=WIDTH, height=plot.y1 + AXIS_HEIGHT + LEGEND_HEIGHT,
        title=f"Rollback {run.run_id[:8]}: {state} in {clock((end - start).total_seconds())}",
        subtitle=f"started {start:%Y-%m-%d %H:%M:%S} UTC by {run.initiator_name}"[:70],
        plot=plot, rows=rows, bars=tuple(bars), marks=tuple(marks), ticks=ticks,
        legend_top=plot.y1 + AXIS_HEIGHT)


def _attempts(events: list[ChartEvent]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in events:
        if e.kind == "step_started" and e.step is not None:
            counts[e.step] = counts.get(e.step, 0) + 1
    return counts


def _label(name: str, attempts: int) -> str:
    if name == RUN_ROW:
        return "run"
    step = StepName(name)
    label = f"{step_number(step)} {SHORT_TITLES[step]}"
    return label + (f" x{attempts}" if attempts > 1 else "")  # the font has no ×
