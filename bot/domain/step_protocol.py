"""The one small protocol every runbook step implements, and the values it trades in.

A step says what it would do (`plan`, no side effects), whether its effect is already in place
(`check`), and does it (`run`), streaming output lines to a sink. The engine owns timeouts,
approvals and the incident log; a step owns only its piece of the outside world.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from bot.domain.fingerprint import plan_fingerprint
from bot.domain.ledgers import NotificationLedger, RotationLedger
from bot.domain.steps import StepName
from bot.settings import Settings

# Receives each output line as it happens. Must not block: the engine buffers and mirrors.
OutputSink = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """What a step will do. `facts` are what approvers approve: they form the fingerprint, and
    a change in any of them voids the approvals given so far.

    `volatile` facts are shown but not approved: live measurements that move while people read
    (row counts on a target taking writes) and that the step itself does not treat as a
    different plan. A step says which of its facts are which.
    """

    step: StepName
    summary: str
    facts: Mapping[str, Any]
    details: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    volatile: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return plan_fingerprint({"step": self.step.value, **self.facts})


@dataclass(frozen=True)
class CheckResult:
    done: bool
    reason: str


@dataclass(frozen=True)
class Outcome:
    """Structured facts of a finished step, for the thread and the post-mortem summary."""

    summary: str
    facts: Mapping[str, Any] = field(default_factory=dict)


class StepError(Exception):
    """A step failed in a way worth one clear sentence to the engineers (no traceback)."""


class LeaseLost(StepError):
    """A ledger refused a write: the execution no longer holds its lease (another replica may
    have taken the step over), so nothing more may be recorded or done on its behalf."""


@dataclass(frozen=True)
class StepContext:
    run_id: str
    settings: Settings
    rotations: RotationLedger
    notifications: NotificationLedger
    # Facts of the steps already done in this run, e.g. the restart time for the log scan.
    earlier_facts: Mapping[StepName, Mapping[str, Any]] = field(default_factory=dict)
    # The execution this context was made for ("" for plans and checks). The ledgers handed to
    # an execution are fenced by it: they refuse to write once it no longer holds its lease.
    execution_id: str = ""
    # The key rotation this run works on: the run that began it, which is an earlier run when
    # this one continues a rotation a stopped run left open (its own run_id when none). Steps
    # key the target's work table and both ledgers by it, never by `run_id`.
    rotation_id: str = ""

    def __post_init__(self) -> None:
        if not self.rotation_id:
            object.__setattr__(self, "rotation_id", self.run_id)

    @property
    def continues_rotation(self) -> bool:
        """Whether this run continues a rotation an earlier run began."""
        return self.rotation_id != self.run_id


class Step(Protocol):
    name: StepName

    async def plan(self, ctx: StepContext) -> Plan: ...

    async def check(self, ctx: StepContext) -> CheckResult: ...

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome: ...


@runtime_checkable
class LeavesWorkBehind(Protocol):
    """A step whose work may outlive a stopped run (a later run continues it). When a run is
    aborted or rejected, the engine asks it what the stop leaves behind, to say so."""

    async def left_behind(self, ctx: StepContext) -> tuple[str, ...]:
        """Lines for people (no secrets), or () when nothing is left."""
        ...
