"""The incident log as a markdown timeline: uploaded to the thread, written by the terminal."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from bot.domain.follow_ups import done_count, follow_up_line
from bot.domain.views import RunView


class EventLike(Protocol):
    id: int
    at: datetime
    actor: str
    source: str
    kind: str
    step: str | None
    data: dict[str, Any]


def timeline_markdown(run: RunView, events: Iterable[EventLike]) -> str:
    lines = [f"# Phase 3 rollback {run.run_id}", "",
             f"- started by {run.initiator_name} ({run.initiator_id}) at {run.created_at}",
             f"- reason: {run.reason}", f"- status: {run.status.value}", "",
             "| # | time (UTC) | actor | source | event | step | details |",
             "|---|---|---|---|---|---|---|"]
    for e in events:
        data = dict(e.data)
        if e.kind == "step_output":
            details = f"{len(data.get('lines', []))} output lines from line {data.get('first')}"
        else:
            details = json.dumps(data, default=str, sort_keys=True)
        details = details.replace("|", "\\|")[:500]
        lines.append(f"| {e.id} | {e.at:%Y-%m-%d %H:%M:%S} | {e.actor} | {e.source} | "
                     f"{e.kind} | {e.step or ''} | {details} |")
    if run.follow_ups:
        lines += ["", f"## Post-rollback actions ({done_count(run.follow_ups)}/"
                  f"{len(run.follow_ups)} done)", ""]
        lines += [f"- {follow_up_line(item)}" for item in run.follow_ups]
    return "\n".join(lines) + "\n"
