"""The thread as plain text: one incident-log entry becomes the lines Slack would have shown.

Pure functions of an event and the run's view, so the terminal and its tests agree on the words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.domain.events import EventKind
from bot.domain.states import StepStatus
from bot.domain.steps import STEP_ORDER, STEP_TITLES, StepName, step_number
from bot.domain.views import RunView, StepView

RULE = "─" * 72
LOSSY = ("LOSSY ROLLBACK: all API keys will be lost; every client must be re-keyed "
         "(new keys reach clients only by email).")
_MARKS: dict[StepStatus | None, str] = {
    None: "·", StepStatus.AWAITING_APPROVAL: "?", StepStatus.RUNNING: "▶",
    StepStatus.SUCCEEDED: "✓", StepStatus.ALREADY_DONE: "✓", StepStatus.FAILED: "✗",
    StepStatus.INTERRUPTED: "!", StepStatus.REJECTED: "✗", StepStatus.ABORTED: "✗",
}


@dataclass(frozen=True)
class LogEntry:
    """The fields of an incident event the terminal draws (any row with these attributes)."""

    id: int
    kind: str
    step: str | None
    data: Mapping[str, Any]
    actor_id: str
    created_at: datetime | None


def entry_of(event: Any) -> LogEntry:
    return LogEntry(
        id=int(event.id), kind=str(event.kind), step=event.step,
        data=event.data or {}, actor_id=str(getattr(event, "actor_id", "") or ""),
        created_at=getattr(event, "created_at", None),
    )


def step_heading(step: StepName) -> str:
    return f"{step_number(step)}/{len(STEP_ORDER)} {STEP_TITLES[step]}"


def status_board(view: RunView) -> list[str]:
    lines = [RULE, f"⚠ {LOSSY}",
             f"Rollback {view.run_id[:8]} · {view.status.value} · started by "
             f"{view.initiator_name}: {view.reason}"]
    for sv in view.steps:
        state = sv.status.value.replace("_", " ") if sv.status else "not reached"
        who = f" ({', '.join(a.user_name for a in sv.approvers)})" if sv.approvers else ""
        lines.append(f"  {_MARKS[sv.status]} {step_heading(sv.step)}: {state}{who}")
    if view.abort_reason:
        lines.append(f"  stopped: {view.abort_reason}")
    lines += [f"  {line}" for line in view.left_behind]
    lines.append(RULE)
    return lines


def _step_view(view: RunView, entry: LogEntry) -> StepView | None:
    if entry.step is None:
        return None
    return next((s for s in view.steps if s.step.value == entry.step), None)


def _facts(facts: Mapping[str, Any], indent: str = "    ") -> list[str]:
    return [f"{indent}{key}: {_value(value)}" for key, value in facts.items()]


def _value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


def render_entry(entry: LogEntry, view: RunView) -> list[str]:
    """The lines for one log entry; empty when the entry has nothing to show."""
    data, kind = entry.data, EventKind(entry.kind)
    heading = step_heading(StepName(entry.step)) if entry.step else ""
    who = str(data.get("user_name") or entry.actor_id)
    if kind is EventKind.RUN_STARTED:
        return [f"Rollback started by {data.get('initiator_name', who)}: {data.get('reason')}",
                *status_board(view)]
    if kind is EventKind.PLAN_SHOWN:
        lines = ["", f"■ Step {heading} (attempt {data.get('attempt', 1)})",
                 f"  plan: {data.get('summary', '')}"]
        sv = _step_view(view, entry)
        if sv is not None and sv.execution_id == data.get("execution_id") and sv.plan:
            lines += [f"    {detail}" for detail in sv.plan.details]
            lines += [f"    ⚠ {warning}" for warning in sv.plan.warnings]
        needed = sv.approvals_needed if sv else 2
        return [*lines, f"  waiting for {needed} approvals (0/{needed})"]
    if kind is EventKind.APPROVALS_VOIDED:
        return [f"  ⚠ the plan changed before the step started; approvals voided: "
                f"{data.get('summary', '')}"]
    if kind is EventKind.APPROVAL_GIVEN:
        sv = _step_view(view, entry)
        needed = sv.approvals_needed if sv else 2
        return [f"  ✔ approved {data.get('count', '?')}/{needed}: {who}"]
    if kind is EventKind.REFUSED:
        slow = f" ({data['slow']})" if data.get("slow") else ""  # what a late re-plan was doing
        return [f"  ✖ refused {who}: {str(data.get('why', '')).replace('_', ' ')}{slow}"]
    if kind is EventKind.STEP_STARTED:
        return [f"  ▶ running (approved by {', '.join(data.get('approvers', []))})"]
    if kind is EventKind.STEP_OUTPUT:
        return [f"  │ {line}" for line in data.get("lines", [])]
    if kind in (EventKind.STEP_SUCCEEDED, EventKind.STEP_ALREADY_DONE):
        facts = {k: v for k, v in dict(data.get("facts", {})).items()}
        return [f"  ✓ done: {data.get('summary', '')}", *_facts(facts)]
    if kind is EventKind.STEP_FAILED:
        tail = [f"  ┆ {line}" for line in data.get("error_tail", [])]
        return [f"  ✗ FAILED: {data.get('summary', '')}", *tail]
    if kind is EventKind.STEP_INTERRUPTED:
        return [f"  ! interrupted: {data.get('summary', data.get('reason', ''))}; "
                "a retry needs two fresh approvals"]
    if kind is EventKind.STEP_REJECTED:
        return [f"  ✗ rejected by {who}: {data.get('reason', '')}",
                *(f"    {line}" for line in data.get("left_behind", ()))]
    if kind is EventKind.RETRY_REQUESTED:
        return [f"  ↻ retry requested by {who} (attempt {data.get('next_attempt', '?')})"]
    if kind is EventKind.RUN_ABORTED:
        return [f"Rollback aborted by {who}: {data.get('reason', '')}",
                *(f"  {line}" for line in data.get("left_behind", ()))]
    if kind is EventKind.RUN_COMPLETED:
        unconfirmed = list(data.get("unconfirmed", []))
        if unconfirmed:
            return ["", f"Rollback completed with {len(unconfirmed)} unconfirmed deliveries: "
                    f"{', '.join(unconfirmed)} (Resend needs two approvals)."]
        return ["", "Rollback completed: all six steps done."]
    if kind is EventKind.RESEND_STARTED:
        return [f"  ▶ resending to {', '.join(data.get('clients', []))} (approved by "
                f"{', '.join(data.get('approvers', []))}; duplicates are possible)"]
    if kind is EventKind.RESEND_FINISHED:
        return [f"  ↻ resend {str(data.get('status', '')).replace('_', ' ')}: "
                f"{data.get('summary', '')}"]
    if kind is EventKind.DELIVERIES_CONFIRMED:
        return ["Rollback completed: every delivery is now recorded sent."]
    if kind is EventKind.TAKEN_OVER:
        return [f"⚠ taken over at the terminal by {who}: {data.get('reason', '')}"]
    return _follow_through_lines(kind, heading, data, who)


def _follow_through_lines(kind: EventKind, heading: str, data: Mapping[str, Any],
                          who: str) -> list[str]:
    """Pages, nudges, escalation and follow-ups, as the thread shows them."""
    if kind is EventKind.PAGE_SENT:
        return [f"  ☎ PagerDuty {data.get('action')} ({data.get('trigger')}): "
                f"{data.get('summary') or data.get('dedup_key')}"]
    if kind is EventKind.PAGE_FAILED:
        return [f"  ⚠ paging failed ({data.get('action')} for {data.get('for_kind')}, "
                f"{data.get('attempts')} attempts): {data.get('error')}; the rollback goes on"]
    if data.get("resend") and kind in (EventKind.APPROVAL_REMINDED, EventKind.APPROVAL_OVERDUE):
        heading = f"the resend of {heading}"
    if kind is EventKind.APPROVAL_REMINDED:
        return [f"  ⏰ reminder: {heading} has waited {data.get('waited_minutes')} min for "
                f"approval ({data.get('approvals')}/{data.get('needed')})"]
    if kind is EventKind.APPROVAL_OVERDUE:
        return [f"  ⏰ {heading} overdue: waited {data.get('waited_minutes')} min"]
    if kind is EventKind.APPROVAL_EXPIRED:
        what = "resend approval" if data.get("resend") else "approval"
        return [f"  ⌛ {what} by {who} expired; it no longer counts (approve again)"]
    if kind is EventKind.QUORUM_UNREACHABLE:
        return [f"  ⚠ {heading} cannot reach quorum: {data.get('eligible_left')} eligible left, "
                f"{data.get('still_needed')} approvals needed"]
    if kind is EventKind.ESCALATED:
        return [f"  ‼ ESCALATED by {who}: {data.get('why')}"]
    if kind is EventKind.FOLLOW_UP_OWNED:
        return [f"  ☐ {who} owns: {data.get('title')}"]
    if kind is EventKind.FOLLOW_UP_DONE:
        return [f"  ☑ done by {who}: {data.get('title')}"]
    return []
