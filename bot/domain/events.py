"""The kinds of entries in the incident log. The log is append-only; Slack is a view of it."""

from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    RUN_STARTED = "run_started"
    PLAN_SHOWN = "plan_shown"
    APPROVAL_GIVEN = "approval_given"
    APPROVALS_VOIDED = "approvals_voided"
    REFUSED = "refused"
    STEP_STARTED = "step_started"
    STEP_OUTPUT = "step_output"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_ALREADY_DONE = "step_already_done"
    STEP_FAILED = "step_failed"
    STEP_INTERRUPTED = "step_interrupted"
    STEP_REJECTED = "step_rejected"
    RETRY_REQUESTED = "retry_requested"
    RUN_ABORTED = "run_aborted"
    RUN_COMPLETED = "run_completed"
    TAKEN_OVER = "taken_over"  # break-glass: the terminal took over a run started in Slack
    # Resending step 5's unconfirmed emails (bot/engine/resends.py).
    RESEND_STARTED = "resend_started"
    RESEND_FINISHED = "resend_finished"
    DELIVERIES_CONFIRMED = "deliveries_confirmed"  # the run becomes plain completed
    # Follow-through (bot/engine/follow_through.py): pages, nudges, escalation, follow-ups.
    PAGE_SENT = "page_sent"
    PAGE_FAILED = "page_failed"
    APPROVAL_REMINDED = "approval_reminded"
    APPROVAL_OVERDUE = "approval_overdue"
    APPROVAL_EXPIRED = "approval_expired"
    QUORUM_UNREACHABLE = "quorum_unreachable"
    ESCALATED = "escalated"
    FOLLOW_UP_OWNED = "follow_up_owned"
    FOLLOW_UP_DONE = "follow_up_done"


class Source(StrEnum):
    SLACK = "slack"
    TERMINAL = "terminal"
    BOT = "bot"
