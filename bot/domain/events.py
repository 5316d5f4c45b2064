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


class Source(StrEnum):
    SLACK = "slack"
    TERMINAL = "terminal"
    BOT = "bot"
