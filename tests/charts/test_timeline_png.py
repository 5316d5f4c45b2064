"""The timeline picture as painted: a valid PNG of the layout's size, each bar in its colour
where the layout put it, the layout's data inside the file."""

from __future__ import annotations

import io

from PIL import Image

from bot.charts.timeline_png import BACKGROUND, GRID, ROW_SHADE, render_png
from bot.domain.states import RunStatus
from bot.domain.timeline_chart import chart_layout
from tests.charts.png_checks import bars_painted, read_png, running_bars_match_events
from tests.domain.test_timeline_chart import LOG, run


def test_the_png_shows_the_layout() -> None:
    layout = chart_layout(run(120, RunStatus.ABORTED), LOG)
    data = render_png(layout)
    image, drawing = read_png(data)
    assert image.size == (layout.width, layout.height)
    assert drawing == layout.as_data()
    bars_painted(image, drawing)
    running_bars_match_events(drawing, LOG)
    # Nothing is painted in the plot where the log has no bar: step 4's row is empty.
    row = next(r for r in layout.rows if r.name == "rotate_keys")
    pixels = image.convert("RGB")
    assert {pixels.getpixel((x, (row.y0 + row.y1) // 2))
            for x in range(layout.plot.x0 + 5, layout.plot.x1 - 5, 7)} <= {BACKGROUND, GRID,
                                                                          ROW_SHADE}
    assert len(data) < 200_000  # a phone downloads it in a moment


def test_an_empty_log_still_draws() -> None:
    data = render_png(chart_layout(run(None, RunStatus.ACTIVE), []))
    assert Image.open(io.BytesIO(data)).size[0] == 1200
