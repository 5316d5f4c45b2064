"""The post-mortem summary and the markdown timeline, as files and text a terminal can hold."""

from __future__ import annotations

from datetime import datetime

from bot.domain.follow_ups import done_count, follow_up_line
from bot.domain.log_chain import verify_hint
from bot.domain.views import RunView
from bot.terminal.render import step_heading


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{(end - start).total_seconds():.1f} s"


def summary_text(view: RunView) -> str:
    """What the post-mortem needs: who approved what, how long each step took, what it did."""
    lines = [f"Post-mortem summary of rollback {view.run_id}",
             f"  initiator: {view.initiator_name}; reason: {view.reason}",
             f"  outcome: {view.status.value}"
             + (f" ({view.abort_reason})" if view.abort_reason else "")
             + (f" — {len(view.unconfirmed)} unconfirmed deliveries: "
                f"{', '.join(view.unconfirmed)}" if view.unconfirmed else ""),
             *(f"  {line}" for line in view.left_behind),
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
    if view.log_head is not None:
        lines += [f"  incident log: {view.log_head.seq} events, chain head {view.log_head.hash}",
                  f"      check: {verify_hint(view.run_id, view.log_head.hash)}"]
    return "\n".join(lines + follow_up_checklist(view))


def follow_up_checklist(view: RunView) -> list[str]:
    """The runbook's post-rollback actions, and how to own or close one from here."""
    if not view.follow_ups:
        return []
    return ["", f"Post-rollback actions ({done_count(view.follow_ups)}/{len(view.follow_ups)} "
            "done):", *(f"  {follow_up_line(item)}" for item in view.follow_ups),
            "  own one:   rollback-bot follow-ups own N --as USER_ID",
            "  close one: rollback-bot follow-ups done N --as USER_ID"]
