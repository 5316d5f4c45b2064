"""The incident log as a markdown timeline: uploaded to the thread, written by the terminal.

Text that people or the outside world wrote (the reason, names, event details such as a reject
reason or a step's error) is shown as inline code: whichever way the file is read — raw, in
Slack's file preview, or rendered as markdown by a wiki or GitHub — `<!channel>`,
`<@U123>`, `<https://evil.example|click me>` or `[click me](https://evil.example)` appear as
typed and do nothing. (A file Slack stores never pings anyone; the code spans make sure a
rendered copy links nowhere either.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from bot.domain.follow_ups import done_count, follow_up_line
from bot.domain.log_chain import verify_hint
from bot.domain.views import RunView


class EventLike(Protocol):
    id: int
    at: datetime
    actor: str
    source: str
    kind: str
    step: str | None
    data: dict[str, Any]
    seq: int
    hash: str


_BACKTICKS = re.compile(r"`+")


def literal(text: object, in_table: bool = False) -> str:
    """`text` as a markdown code span (CommonMark): shown as typed, never a link or markup.
    The fence is one backtick longer than the longest run inside; newlines become spaces."""
    shown = " ".join(str(text).splitlines()) or " "
    if in_table:
        shown = shown.replace("|", "\\|")  # GFM splits table cells on | even in code
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(shown)), default=0) + 1)
    pad = " " if shown.startswith(("`", " ")) or shown.endswith(("`", " ")) else ""
    return f"{fence}{pad}{shown}{pad}{fence}"


def timeline_markdown(run: RunView, events: Iterable[EventLike]) -> str:
    lines = [f"# Phase 3 rollback {run.run_id}", "",
             f"- started by {literal(run.initiator_name)} ({literal(run.initiator_id)}) "
             f"at {run.created_at}",
             f"- reason: {literal(run.reason)}", f"- status: {run.status.value}", "",
             "| # | time (UTC) | actor | source | event | step | details |",
             "|---|---|---|---|---|---|---|"]
    last: EventLike | None = None
    for e in events:
        last = e
        data = dict(e.data)
        if e.kind == "step_output":
            details = f"{len(data.get('lines', []))} output lines from line {data.get('first')}"
        else:
            details = json.dumps(data, default=str, sort_keys=True)
        lines.append(f"| {e.id} | {e.at:%Y-%m-%d %H:%M:%S} | {literal(e.actor, True)} | "
                     f"{e.source} | {e.kind} | {e.step or ''} | "
                     f"{literal(details[:500], True)} |")
    if run.follow_ups:
        lines += ["", f"## Post-rollback actions ({done_count(run.follow_ups)}/"
                  f"{len(run.follow_ups)} done)", ""]
        lines += [f"- {follow_up_line(item)}" for item in run.follow_ups]
    lines += ["", *chain_lines(run.run_id, last)]
    return "\n".join(lines) + "\n"


def chain_lines(run_id: str, last: EventLike | None) -> list[str]:
    """The chain's head, last in the file: a copy of the log's state kept outside the database
    (`rollback-bot verify-log` proves the stored log against it)."""
    if last is None:
        return ["## Log chain", "", "- no events"]
    return ["## Log chain", "",
            f"- {last.seq} events, each holding the SHA-256 of the one before "
            "(`bot/domain/log_chain.py`)",
            f"- check: `{verify_hint(run_id, last.hash)}`",
            f"- head (event {last.id}, seq {last.seq}): `{last.hash}`"]
