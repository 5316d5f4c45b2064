"""Who may approve which step, decided from plain facts so it can be tested by tables of cases.

The database enforces the same rules again (a unique approval per user and step execution, and a
quorum count inside the transaction that starts the step); this is the policy that explains a
refusal in words an engineer understands.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.domain.plan_parts import SlowPlan
from bot.domain.states import StepStatus

APPROVALS_NEEDED = 2
# An approval older than this no longer counts towards the quorum (APPROVAL_TTL_MINUTES).
APPROVAL_TTL_SECONDS = 60 * 60.0


class Refusal(StrEnum):
    NOT_AUTHORISED = "not_authorised"
    OWN_RUN = "own_run"
    ALREADY_APPROVED = "already_approved"
    NOT_WAITING = "not_waiting"
    STALE_BUTTON = "stale_button"
    PLAN_CHANGED = "plan_changed"
    ANOTHER_RUN_ACTIVE = "another_run_active"
    TARGET_BUSY = "target_busy"  # the plan's deadline ran out while it waited on the target
    PLAN_TOO_SLOW = "plan_too_slow"  # ... while it did something else (`SlowPlan` says what)
    NOTHING_TO_RESEND = "nothing_to_resend"  # a Resend once every email is confirmed
    OTHER_TARGET = "other_target"  # a click on another target's run, sent to this one's engine


REFUSAL_TEXT: dict[Refusal, str] = {
    Refusal.NOT_AUTHORISED: "you are not an authorised approver for rollbacks",
    Refusal.OWN_RUN: "you started this rollback; two other engineers must approve its steps",
    Refusal.ALREADY_APPROVED: "you have already approved this step; a second engineer must approve",
    Refusal.NOT_WAITING: "this step is not waiting for approval",
    Refusal.STALE_BUTTON: "this button belongs to an older attempt or another run",
    Refusal.PLAN_CHANGED: "the plan changed since this message was shown; review the new plan",
    Refusal.ANOTHER_RUN_ACTIVE: "another rollback is already active",
    Refusal.TARGET_BUSY: "the target database is busy (the plan could not be confirmed in "
                         "time); nothing changed — try again in a moment",
    Refusal.PLAN_TOO_SLOW: "the plan could not be computed in time; nothing changed — try "
                           "again in a moment",
    Refusal.NOTHING_TO_RESEND: "every client's email is recorded sent: nothing is left to "
                               "resend",
    Refusal.OTHER_TARGET: "this button belongs to a rollback on another target",
}


def slow_plan_refusal(slow: SlowPlan) -> tuple[Refusal, str]:
    """The refusal of a click whose re-plan ran out of time, and its words: what was slow."""
    if slow.target:
        return Refusal.TARGET_BUSY, f"{REFUSAL_TEXT[Refusal.TARGET_BUSY]} ({slow.describe()})"
    return Refusal.PLAN_TOO_SLOW, (f"{slow.describe()}, so the plan could not be confirmed; "
                                   "nothing changed — try again in a moment")


@dataclass(frozen=True)
class ApprovalContext:
    """Everything the policy needs to know about one click."""

    user_id: str
    authorised: bool
    initiator_id: str
    allow_self_approval: bool
    step_status: StepStatus
    existing_approvers: frozenset[str]
    button_execution_id: str
    current_execution_id: str
    button_fingerprint: str
    current_fingerprint: str


@dataclass(frozen=True)
class ApprovalDecision:
    refusal: Refusal | None
    quorum_reached: bool = False

    @property
    def accepted(self) -> bool:
        return self.refusal is None


def decide_approval(ctx: ApprovalContext, needed: int = APPROVALS_NEEDED) -> ApprovalDecision:
    if not ctx.authorised:
        return ApprovalDecision(Refusal.NOT_AUTHORISED)
    if ctx.button_execution_id != ctx.current_execution_id:
        return ApprovalDecision(Refusal.STALE_BUTTON)
    if ctx.step_status is not StepStatus.AWAITING_APPROVAL:
        return ApprovalDecision(Refusal.NOT_WAITING)
    if ctx.button_fingerprint != ctx.current_fingerprint:
        return ApprovalDecision(Refusal.PLAN_CHANGED)
    if ctx.user_id == ctx.initiator_id and not ctx.allow_self_approval:
        return ApprovalDecision(Refusal.OWN_RUN)
    if ctx.user_id in ctx.existing_approvers:
        return ApprovalDecision(Refusal.ALREADY_APPROVED)
    return ApprovalDecision(None, quorum_reached=len(ctx.existing_approvers) + 1 >= needed)


def eligible_approvers(
    authorised: frozenset[str], initiator_id: str, allow_self_approval: bool
) -> frozenset[str]:
    """Engineers who could approve the initiator's run."""
    return authorised if allow_self_approval else authorised - {initiator_id}
