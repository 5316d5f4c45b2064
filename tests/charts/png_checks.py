"""What a timeline PNG must be, wherever it was made (the thread's upload, the rehearsal's file):
a valid PNG of the layout's size, whose drawing data (carried in the file) puts each bar where
the incident log's events say, painted in its kind's colour."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from PIL import Image

from bot.charts.timeline_png import BAR_COLOURS, CHART_CHUNK
from bot.domain.timeline_chart import WIDTH, BarKind


def read_png(data: bytes) -> tuple[Image.Image, dict[str, Any]]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), data[:16]
    Image.open(io.BytesIO(data)).verify()  # the whole file: chunks and their CRCs
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    drawing = json.loads(image.text[CHART_CHUNK])  # type: ignore[attr-defined]
    assert image.size == (WIDTH, drawing["height"]) and drawing["width"] == WIDTH
    return image, drawing


def bars_painted(image: Image.Image, drawing: dict[str, Any]) -> None:
    for bar in drawing["bars"]:
        x0, y0, x1, y1 = bar["box"]
        middle = ((x0 + x1 - 1) // 2, (y0 + y1) // 2)
        assert image.convert("RGB").getpixel(middle) == BAR_COLOURS[BarKind(bar["kind"])], bar


def running_bars_match_events(drawing: dict[str, Any], events: Sequence[Any]) -> None:
    """Every step's running bars start at its step_started and end at its outcome; its first
    waiting bar starts at its first plan_shown."""
    for step in {e.step for e in events if e.kind == "step_started"}:
        started = [e.at for e in events if e.step == step and e.kind == "step_started"]
        ended = [e.at for e in events if e.step == step and e.kind in (
            "step_succeeded", "step_already_done", "step_failed", "step_interrupted")]
        worked = [bar for bar in drawing["bars"] if bar["row"] == step
                  and bar["kind"] in (BarKind.RUNNING.value, BarKind.FAILED.value)]
        assert [datetime.fromisoformat(b["start"]) for b in worked] == started, step
        assert [datetime.fromisoformat(b["end"]) for b in worked] == ended, step
        first_plan = next(e.at for e in events if e.step == step and e.kind == "plan_shown")
        waits = [b for b in drawing["bars"] if b["row"] == step
                 and b["kind"] == BarKind.WAITING.value]
        assert datetime.fromisoformat(waits[0]["start"]) == first_plan, step
