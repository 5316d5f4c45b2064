"""What to page, when to nudge approvers, and when a run cannot reach quorum — decided from plain
facts (an injected clock included) so tables of cases can test it.

The engine's follow-through watcher feeds this from the incident log; the PagerDuty adapter
(`bot/paging`) only carries what it decides. One run is one alert: every page of a run shares the
dedup key `rollback-<run id>`, so PagerDuty groups them into one incident and the closing resolve
clears it. An escalation is an alert of its own (`rollback-<run id>-escalation`): it must reach
people even after on-call acknowledged the run's alert, and an acknowledged alert notifies nobody
of further triggers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from bot.domain.events import EventKind
from bot.domain.steps import STEP_TITLES, StepName, step_number
from bot.domain.views import RunView

SUMMARY_LIMIT = 1024  # PagerDuty refuses a longer payload.summary
DEDUP_LIMIT = 255


class PageAction(StrEnum):
    TRIGGER = "trigger"
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"


class Severity(StrEnum):
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class PageTrigger(StrEnum):
    """Why a page goes out. `PAGE_ON` chooses among the first four; an escalation is a person's
    explicit request and always pages; the resolve follows any trigger that went out."""

    START = "start"
    FAILURE = "failure"
    WAITING = "waiting"
    QUORUM = "quorum"
    ESCALATION = "escalation"
    RESOLVE = "resolve"


CONFIGURABLE_TRIGGERS = frozenset(
    {PageTrigger.START, PageTrigger.FAILURE, PageTrigger.WAITING, PageTrigger.QUORUM}
)

SEVERITY: dict[PageTrigger, Severity] = {
    PageTrigger.START: Severity.WARNING,
    PageTrigger.FAILURE: Severity.ERROR,
    PageTrigger.WAITING: Severity.WARNING,
    PageTrigger.QUORUM: Severity.ERROR,
    PageTrigger.ESCALATION: Severity.CRITICAL,
}

# The log entries that may page, and the closing ones that resolve.
PAGE_WORTHY_KINDS = frozenset({
    EventKind.RUN_STARTED, EventKind.STEP_FAILED, EventKind.STEP_INTERRUPTED,
    EventKind.APPROVAL_OVERDUE, EventKind.QUORUM_UNREACHABLE, EventKind.ESCALATED,
    EventKind.RUN_COMPLETED, EventKind.RUN_ABORTED, EventKind.STEP_REJECTED,
    EventKind.RESEND_FINISHED,
})
CLOSING_KINDS = frozenset({EventKind.RUN_COMPLETED, EventKind.RUN_ABORTED,
                           EventKind.STEP_REJECTED})


@dataclass(frozen=True)
class PageRequest:
    """One event for PagerDuty's Events API v2, before it is put on the wire."""

    action: PageAction
    dedup_key: str
    trigger: PageTrigger
    summary: str = ""
    severity: Severity = Severity.ERROR
    custom_details: Mapping[str, Any] = field(default_factory=dict)
    link: str | None = None  # the thread's permalink


@dataclass(frozen=True)
class PageResult:
    accepted: bool
    attempts: int
    status: int | None = None  # the last HTTP status (None: no answer)
    dedup_key: str | None = None  # as PagerDuty answered it
    error: str | None = None


class Pager(Protocol):
    """Carries a page to the outside. Never raises: a failure is a result, so a paging outage
    can never stop a rollback."""

    async def send(self, request: PageRequest) -> PageResult: ...


def run_dedup_key(run_id: str) -> str:
    return f"rollback-{run_id}"[:DEDUP_LIMIT]


def escalation_dedup_key(run_id: str) -> str:
    return f"rollback-{run_id}-escalation"[:DEDUP_LIMIT]


def resend_dedup_key(run_id: str, execution_id: str) -> str:
    """A waiting Resend's alert: its own, since the run's may be resolved already (the run
    ended with unconfirmed deliveries), and resolved when that resend finishes."""
    return f"rollback-{run_id}-resend-{execution_id}"[:DEDUP_LIMIT]


def thread_permalink(channel_id: str | None, thread_ts: str | None) -> str | None:
    """Slack's archive link for a message; it opens the thread in the workspace."""
    if not channel_id or not thread_ts:
        return None
    return f"https://slack.com/archives/{channel_id}/p{thread_ts.replace('.', '')}"


def clip_summary(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


def _step_label(step: str | None) -> str:
    if step is None:
        return "the rollback"
    name = StepName(step)
    return f"step {step_number(name)}/6 ({STEP_TITLES[name]})"


def run_details(run: RunView) -> dict[str, Any]:
    """What an on-call engineer reads in the alert before opening the thread."""
    return {
        "run_id": run.run_id,
        "status": run.status.value,
        "reason": run.reason,
        "initiator": run.initiator_name,
        "steps": {f"{step_number(s.step)} {s.step.value}":
                  (s.status.value if s.status else "not reached")
                  + (f" (attempt {s.attempt})" if s.attempt > 1 else "") for s in run.steps},
        "thread": thread_permalink(run.channel_id, run.thread_ts),
    }


def pages_for_event(
    kind: EventKind, step: str | None, data: Mapping[str, Any], run: RunView,
    page_on: Iterable[str], triggered: Iterable[str] = (),
) -> list[PageRequest]:
    """The pages one incident-log entry calls for. `triggered` holds the dedup keys a trigger
    was accepted for: only those are resolved at the end (PagerDuty drops a resolve for an alert
    it never opened, and the log would record a page that did nothing)."""
    wanted = set(page_on)
    link = thread_permalink(run.channel_id, run.thread_ts)
    details = {**run_details(run), "event": kind.value}
    run_key = run_dedup_key(run.run_id)

    def trigger(why: PageTrigger, summary: str, extra: Mapping[str, Any],
                key: str = run_key) -> list[PageRequest]:
        if why in CONFIGURABLE_TRIGGERS and why.value not in wanted:
            return []
        return [PageRequest(PageAction.TRIGGER, key, why, clip_summary(summary), SEVERITY[why],
                            {**details, **extra}, link)]

    if kind is EventKind.RUN_STARTED:
        return trigger(PageTrigger.START, f"Phase 3 emergency rollback (LOSSY) started by "
                       f"{run.initiator_name}: {run.reason}", {})
    if kind in (EventKind.STEP_FAILED, EventKind.STEP_INTERRUPTED):
        verb = "failed" if kind is EventKind.STEP_FAILED else "was interrupted"
        return trigger(PageTrigger.FAILURE, f"Phase 3 rollback: {_step_label(step)} {verb}: "
                       f"{data.get('summary', '')}", {"error": data.get("summary", "")})
    if kind is EventKind.APPROVAL_OVERDUE and data.get("resend"):
        return trigger(PageTrigger.WAITING, f"Phase 3 rollback: the Resend to "
                       f"{data.get('clients', '?')} unconfirmed clients of {_step_label(step)} "
                       f"has waited {data.get('waited_minutes', '?')} min for approval "
                       f"({data.get('approvals', 0)}/{data.get('needed', 2)})", dict(data),
                       key=resend_dedup_key(run.run_id, str(data.get("execution_id"))))
    if kind is EventKind.RESEND_FINISHED:
        key = resend_dedup_key(run.run_id, str(data.get("execution_id")))
        return ([PageRequest(PageAction.RESOLVE, key, PageTrigger.RESOLVE, link=link)]
                if key in set(triggered) else [])
    if kind is EventKind.APPROVAL_OVERDUE:
        return trigger(PageTrigger.WAITING, f"Phase 3 rollback: {_step_label(step)} has waited "
                       f"{data.get('waited_minutes', '?')} min for approval "
                       f"({data.get('approvals', 0)}/{data.get('needed', 2)})", dict(data))
    if kind is EventKind.QUORUM_UNREACHABLE:
        return trigger(PageTrigger.QUORUM, f"Phase 3 rollback cannot reach quorum at "
                       f"{_step_label(step)}: {data.get('eligible_left', 0)} eligible approvers "
                       f"left, {data.get('still_needed', 2)} approvals still needed", dict(data))
    if kind is EventKind.ESCALATED:
        return trigger(PageTrigger.ESCALATION, f"ESCALATION by {data.get('user_name', '?')}: "
                       f"Phase 3 rollback {run.status.value} — {data.get('why', '')}",
                       {"escalated_by": data.get("user_name"), "why": data.get("why")},
                       key=escalation_dedup_key(run.run_id))
    if kind in CLOSING_KINDS:
        opened = set(triggered)
        return [PageRequest(PageAction.RESOLVE, key, PageTrigger.RESOLVE, link=link)
                for key in (run_key, escalation_dedup_key(run.run_id)) if key in opened]
    return []


# --- nudging approvers --------------------------------------------------------------------------

@dataclass(frozen=True)
class WaitingFacts:
    """A step waiting for approval, as of `now` (the database's clock)."""

    now: datetime
    waiting_since: datetime
    last_reminder_at: datetime | None
    overdue_recorded: bool


@dataclass(frozen=True)
class Nudges:
    remind: bool = False
    overdue: bool = False  # page: it has waited past the second threshold

    def __bool__(self) -> bool:
        return self.remind or self.overdue


def approval_nudges(
    facts: WaitingFacts, remind_after: timedelta | None, page_after: timedelta | None
) -> Nudges:
    """Remind once the step has waited `remind_after`, then at most every `remind_after`;
    page once when it has waited `page_after`. None turns either off."""
    waited = facts.now - facts.waiting_since
    remind = False
    if remind_after is not None and waited >= remind_after:
        remind = (facts.last_reminder_at is None
                  or facts.now - facts.last_reminder_at >= remind_after)
    overdue = (page_after is not None and waited >= page_after and not facts.overdue_recorded)
    return Nudges(remind, overdue)


def approval_expired(approved_at: datetime, now: datetime, ttl: timedelta) -> bool:
    """The same rule the database applies when it counts a quorum (repo_runs.add_approval)."""
    return now - approved_at >= ttl


@dataclass(frozen=True)
class QuorumCheck:
    reachable: bool
    eligible_left: int  # engineers who could still approve
    still_needed: int


def quorum_check(
    eligible: frozenset[str], fresh_approvers: frozenset[str], needed: int
) -> QuorumCheck:
    """Can this step still get its approvals from the engineers who are eligible now?"""
    still_needed = max(0, needed - len(fresh_approvers & eligible))
    left = len(eligible - fresh_approvers)
    return QuorumCheck(left >= still_needed, left, still_needed)


def paging_status(routing_key_set: bool, page_on: Iterable[str], events_url: str) -> str:
    """One line for `check` and the plan: is anyone paged, and on what."""
    if not routing_key_set:
        return ("Paging: off (PAGERDUTY_ROUTING_KEY is not set): nobody is paged; reminders, "
                "escalation mentions and follow-ups still go to the thread")
    chosen = ", ".join(page_on) or "nothing but escalations"
    return f"Paging: on, through {events_url.rstrip('/')}/v2/enqueue, on {chosen} and escalations"
