"""Run and step states, and which transitions between them are allowed.

A run walks the six steps in order. Each step execution (one per attempt) waits for approvals,
runs, and ends; a failed or interrupted step gets a new attempt only through a fresh approval.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    # Every step done, but some clients' emails are unconfirmed (the bot stopped mid-send):
    # never plain "completed" until they are resent (`bot.domain.resend`).
    COMPLETED_UNCONFIRMED = "completed_unconfirmed"
    ABORTED = "aborted"


class ExecutionKind(StrEnum):
    STEP = "step"  # an attempt of the step itself
    RESEND = "resend"  # step 5 sending again to its unconfirmed clients


class StepStatus(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    ALREADY_DONE = "already_done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    REJECTED = "rejected"
    ABORTED = "aborted"


FINAL_RUN_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.COMPLETED_UNCONFIRMED,
                                RunStatus.ABORTED})
DONE_STEP_STATUSES = frozenset({StepStatus.SUCCEEDED, StepStatus.ALREADY_DONE})
# A step in one of these may be retried (a new attempt, approved afresh) or the run aborted.
RETRYABLE_STEP_STATUSES = frozenset({StepStatus.FAILED, StepStatus.INTERRUPTED})

_ALLOWED: dict[StepStatus, frozenset[StepStatus]] = {
    StepStatus.AWAITING_APPROVAL: frozenset(
        {StepStatus.RUNNING, StepStatus.REJECTED, StepStatus.ABORTED, StepStatus.ALREADY_DONE}
    ),
    StepStatus.RUNNING: frozenset(
        {
            StepStatus.SUCCEEDED,
            StepStatus.ALREADY_DONE,
            StepStatus.FAILED,
            StepStatus.INTERRUPTED,
            StepStatus.ABORTED,
        }
    ),
    StepStatus.FAILED: frozenset({StepStatus.ABORTED}),
    StepStatus.INTERRUPTED: frozenset({StepStatus.ABORTED}),
}


def can_transition(current: StepStatus, new: StepStatus) -> bool:
    return new in _ALLOWED.get(current, frozenset())


class IllegalTransition(Exception):
    def __init__(self, current: StepStatus, new: StepStatus) -> None:
        super().__init__(f"a step cannot go from {current} to {new}")
        self.current = current
        self.new = new


def transition(current: StepStatus, new: StepStatus) -> StepStatus:
    if not can_transition(current, new):
        raise IllegalTransition(current, new)
    return new
