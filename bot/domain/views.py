"""Read-only pictures of a run, built by the engine from the incident log and drawn by a front
(Slack blocks or the terminal). No front reads the database itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.domain.follow_ups import FollowUpView
from bot.domain.log_chain import LogHead
from bot.domain.states import RunStatus, StepStatus
from bot.domain.steps import StepName


@dataclass(frozen=True)
class ApproverView:
    user_id: str
    user_name: str
    expired: bool = False  # older than APPROVAL_TTL_MINUTES: shown, no longer counted
    source: str = "slack"  # `terminal`: given at break-glass, proven by the engineer's code


@dataclass(frozen=True)
class PlanView:
    summary: str
    details: tuple[str, ...]
    warnings: tuple[str, ...]
    fingerprint: str


@dataclass(frozen=True)
class ResendView:
    """Step 5's unconfirmed clients (once it is done) and the Resend asked for them."""

    clients: tuple[str, ...]  # hash prefixes of the clients nobody can confirm got their key
    fingerprint: str  # what a Resend click approves: exactly these clients
    offered: bool  # the Resend action is shown (two approvals send it)
    execution_id: str | None = None  # the latest resend
    status: StepStatus | None = None
    approvers: tuple[ApproverView, ...] = ()  # of the resend waiting for its second approval
    summary: str | None = None  # how the latest resend ended
    approvals_needed: int = 2


@dataclass(frozen=True)
class StepView:
    step: StepName
    execution_id: str | None  # None: not reached yet
    attempt: int
    status: StepStatus | None  # None: not reached yet
    plan: PlanView | None
    approvers: tuple[ApproverView, ...] = ()
    approvals_needed: int = 2
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output_tail: tuple[str, ...] = ()  # latest output lines, already safe to show
    output_line_count: int = 0
    summary: str | None = None  # outcome summary or error sentence
    facts: Mapping[str, Any] = field(default_factory=dict)
    error_tail: tuple[str, ...] = ()
    resend: ResendView | None = None  # step 5 only: its unconfirmed clients


@dataclass(frozen=True)
class RunView:
    run_id: str
    status: RunStatus
    initiator_id: str
    initiator_name: str
    reason: str
    created_at: datetime
    finished_at: datetime | None
    steps: tuple[StepView, ...]
    abort_reason: str | None = None
    # What an abort or a reject left for a new run to continue (step 4's rotation), as the
    # stop's log entry recorded it.
    left_behind: tuple[str, ...] = ()
    channel_id: str | None = None
    thread_ts: str | None = None
    notices: tuple[str, ...] = ()  # what every view must say about the run, e.g. a take-over
    follow_ups: tuple[FollowUpView, ...] = ()  # the runbook's post-rollback actions, once ended
    unconfirmed: tuple[str, ...] = ()  # hash prefixes of clients whose email is unconfirmed
    log_head: LogHead | None = None  # the incident log's chain head as this view was read
    target: str = "default"  # which target the run rolls back (bot/targets.py)

    @property
    def target_label(self) -> str:
        """" on <target>" for a named target, said wherever someone approves; empty for the
        one target of a single-target bot."""
        return "" if self.target == "default" else f" on {self.target}"
