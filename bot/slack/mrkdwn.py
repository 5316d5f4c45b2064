"""Text for Slack's mrkdwn, safe whoever wrote it, and within Slack's limits as Slack counts.

Slack reads `<…>` as a control sequence (`<!channel>`, `<!here>`, `<!subteam^S…>`, `<@U…>`,
`<https://evil.example|click me>`), so a reason typed by a person, a step's output line or a
fact read from a target would ping a channel or show a disguised link if sent verbatim. Slack's
formatting reference asks apps to escape exactly three characters: `&` → `&amp;`, `<` → `&lt;`,
`>` → `&gt;`; what is escaped shows as typed and does nothing.

Inside a code block a line holding three backticks would close the block early; backticks are
kept apart by a zero-width space there, so the rest of the block stays code.

Slack's length limits count UTF-16 code units (an emoji outside the Basic Multilingual Plane is
two), so `clip` counts them too, and never cuts an escape like `&amp;` in half.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

ZERO_WIDTH_SPACE = "\u200b"
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")
_BACKTICK_PAIR = re.compile(r"`(?=`)")


def escape(text: object) -> str:
    """Shown as written in mrkdwn (and in fallback text): pings nobody, links nowhere."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def units(text: str) -> int:
    """Length as Slack counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def cut(text: str, limit: int) -> str:
    """The longest prefix of `text` of at most `limit` UTF-16 units, without splitting a
    character or an escape."""
    if units(text) <= limit:
        return text
    encoded = text.encode("utf-16-le")[: 2 * limit]
    kept = encoded.decode("utf-16-le", errors="ignore")  # drops a half surrogate pair
    return _PARTIAL_ENTITY.sub("", kept)


def clip(text: str, limit: int, marker: str = "\n…[cut]") -> str:
    return text if units(text) <= limit else cut(text, limit - units(marker)) + marker


def code_line(line: str) -> str:
    """One line of untrusted text for a code block: escaped, and no run of backticks left to
    close the block."""
    shown = _BACKTICK_PAIR.sub("`" + ZERO_WIDTH_SPACE, escape(line))
    if shown.startswith("`"):  # would join the opening fence
        shown = ZERO_WIDTH_SPACE + shown
    if shown.endswith("`"):  # would join the closing fence
        shown += ZERO_WIDTH_SPACE
    return shown


def code_block(lines: Sequence[str], limit: int = 2800) -> str:
    """The newest lines that fit in `limit` UTF-16 units, escaped, in a code block."""
    kept: list[str] = []
    size = 6  # the fences
    for line in reversed(lines):
        shown = code_line(line)
        size += units(shown) + 1
        if size > limit:
            break
        kept.insert(0, shown)
    return "```" + ("\n".join(kept) or " ") + "```"
