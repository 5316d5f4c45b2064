"""The post-mortem summary and the markdown timeline, as files and text a terminal can hold."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.domain.views import RunView
from bot.terminal.render import LogEntry, entry_of, render_entry, step_heading


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{(end - start).total_seconds():.1f} s"


def summary_text(view: RunView) -> str:
    """What the post-mortem needs: who approved what, how long each step took, what it did."""
    lines = [f"Post-mortem summary of rollback {view.run_id}",
             f"  initiator: {view.initiator_name}; reason: {view.reason}",
             f"  outcome: {view.status.value}"
             + (f" ({view.abort_reason})" if view.abort_reason else ""),
             f"  total: {_duration(view.created_at, view.finished_at)}"]
    for sv in view.steps:
        state = sv.status.value if sv.status else "not reached"
        approvers = ", ".join(a.user_name for a in sv.approvers) or "-"
        lines.append(f"  {step_heading(sv.step)}: {state} in "
                     f"{_duration(sv.started_at, sv.finished_at)}; attempt {sv.attempt}; "
                     f"approved by {approvers}")
        if sv.summary:
            lines.append(f"      {sv.summary}")
        for key, value in sv.facts.items():
            lines.append(f"      {key}: {value}")
    return "\n".join(lines)


def own_timeline_markdown(view: RunView, entries: Sequence[LogEntry]) -> str:
    out = [f"# Rollback {view.run_id}", "",
           f"- initiator: {view.initiator_name}", f"- reason: {view.reason}",
           f"- outcome: {view.status.value}", "", "| time (UTC) | who | event |", "|---|---|---|"]
    for entry in entries:
        when = entry.created_at.strftime("%Y-%m-%d %H:%M:%S") if entry.created_at else ""
        who = str(entry.data.get("user_name") or entry.actor_id)
        text = " / ".join(line.strip() for line in render_entry(entry, view) if line.strip()
                          and not line.startswith("─"))
        out.append(f"| {when} | {who} | {entry.kind}: {text.replace('|', '¦')} |")
    return "\n".join(out) + "\n"


def timeline_markdown(view: RunView, events: Sequence[Any]) -> str:
    """The Slack front's timeline when it is available (one format for both), else ours."""
    try:
        from bot.slack.blocks import timeline_markdown as slack_timeline
    except ImportError:
        return own_timeline_markdown(view, [entry_of(e) for e in events])
    return str(slack_timeline(view, list(events)))
