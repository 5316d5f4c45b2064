"""Paints the run's timeline (`bot.domain.timeline_chart`) as a PNG, with Pillow.

Pillow, because the picture is a few rectangles, triangles and words: it draws them itself,
brings its own font (`ImageFont.load_default(size)`, FreeType inside its wheel, so no system
font is needed in the image) and adds a few MB to the image, where a plotting stack
(matplotlib and numpy) would add tens. Everything placed here was placed by the layout; this
module only chooses colours and shapes. The layout's data goes into the PNG as a text chunk
(`rollback-bot-chart`), so the picture carries what it shows.
"""

from __future__ import annotations

import io
import json

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from bot.domain.timeline_chart import BarKind, ChartLayout, MarkKind

CHART_CHUNK = "rollback-bot-chart"
BACKGROUND = (255, 255, 255)
INK = (33, 37, 41)
GRID = (222, 226, 230)
ROW_SHADE = (246, 247, 249)
BAR_COLOURS: dict[BarKind, tuple[int, int, int]] = {
    BarKind.WAITING: (242, 177, 52),  # amber: people deciding
    BarKind.RUNNING: (46, 134, 222),  # blue: the bot working
    BarKind.FAILED: (214, 69, 65),  # red
}
MARK_COLOURS: dict[MarkKind, tuple[int, int, int]] = {
    MarkKind.PAGE: (142, 68, 173),
    MarkKind.ESCALATION: (192, 57, 43),
    MarkKind.REMINDER: (99, 110, 114),
}
MARK_SIZE = 13


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _mark(draw: ImageDraw.ImageDraw, kind: MarkKind, x: int, y: int) -> None:
    s, colour = MARK_SIZE, MARK_COLOURS[kind]
    if kind is MarkKind.PAGE:  # a triangle pointing down at its time
        draw.polygon([(x - s, y - s), (x + s, y - s), (x, y + s)], fill=colour)
    elif kind is MarkKind.ESCALATION:  # a diamond
        draw.polygon([(x, y - s), (x + s, y), (x, y + s), (x - s, y)], fill=colour)
    else:  # a reminder: a ring
        draw.ellipse([x - s, y - s, x + s, y + s], outline=colour, width=4)


def _legend(draw: ImageDraw.ImageDraw, layout: ChartLayout) -> None:
    font = _font(26)
    x, y = 40, layout.legend_top + 20
    for kind, colour in BAR_COLOURS.items():
        draw.rectangle([x, y, x + 34, y + 26], fill=colour)
        draw.text((x + 44, y - 2), kind.value, font=font, fill=INK)
        x += 60 + round(draw.textlength(kind.value, font=font))
    x, y = 40, y + 52
    for mark in MarkKind:
        _mark(draw, mark, x + 14, y + 13)
        draw.text((x + 40, y - 2), mark.value, font=font, fill=INK)
        x += 70 + round(draw.textlength(mark.value, font=font))


def render_png(layout: ChartLayout) -> bytes:
    image = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((40, 28), layout.title, font=_font(44), fill=INK)
    draw.text((40, 90), layout.subtitle, font=_font(28), fill=INK)
    label_font = _font(32)
    plot = layout.plot
    for i, row in enumerate(layout.rows):
        if i % 2:
            draw.rectangle([0, row.y0, layout.width, row.y1 - 1], fill=ROW_SHADE)
        draw.text((40, (row.y0 + row.y1) // 2), row.label, font=label_font, fill=INK,
                  anchor="lm")
    tick_font = _font(26)
    for tick in layout.ticks:
        draw.line([tick.x, plot.y0, tick.x, plot.y1], fill=GRID, width=2)
        draw.text((tick.x, plot.y1 + 12), tick.label, font=tick_font, fill=INK, anchor="mt")
    draw.line([plot.x0, plot.y1, plot.x1, plot.y1], fill=INK, width=2)
    for bar in layout.bars:
        box = bar.box
        draw.rectangle([box.x0, box.y0, box.x1 - 1, box.y1], fill=BAR_COLOURS[bar.kind])
    for mark in layout.marks:
        _mark(draw, mark.kind, mark.x, mark.y)
    _legend(draw, layout)
    info = PngInfo()
    info.add_text(CHART_CHUNK, json.dumps(layout.as_data(), sort_keys=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, optimize=True)
    return buffer.getvalue()
