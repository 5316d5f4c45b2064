"""What a plan was doing when its deadline ran out: the step and, where the step said, the part.

A plan that exceeds `PLAN_TIMEOUT_SECONDS` is cancelled. Steps mark their slow parts with
`plan_part("loading the client directory")`, and waits on the target database with
`target=True`; a part the cancellation passes through is noted on the plan's trace (innermost
first), so the refusal names what was slow — and says "target busy" only when the plan was
waiting on the target. Outside a traced plan (`rollback-bot check`, a step's run) a part is
nothing but a label.
"""

from __future__ import annotations

from asyncio import CancelledError
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from bot.domain.steps import StepName, step_number

TARGET = "waiting on the target database"


@dataclass(frozen=True)
class PlanPart:
    what: str
    target: bool = False


@dataclass
class PlanTrace:
    """The parts a plan's cancellation passed through, innermost first."""

    interrupted: list[PlanPart] = field(default_factory=list)


_trace: ContextVar[PlanTrace | None] = ContextVar("plan_trace", default=None)


@contextmanager
def traced() -> Iterator[PlanTrace]:
    """Trace the plan computed inside (tasks it starts share the trace)."""
    trace = PlanTrace()
    token = _trace.set(trace)
    try:
        yield trace
    finally:
        _trace.reset(token)


@contextmanager
def plan_part(what: str, *, target: bool = False) -> Iterator[None]:
    try:
        yield
    except CancelledError:
        trace = _trace.get()
        if trace is not None:
            trace.interrupted.append(PlanPart(what, target))
        raise


@dataclass(frozen=True)
class SlowPlan:
    """A plan that did not finish within its deadline, and what it was doing then."""

    step: StepName
    limit_seconds: float
    parts: tuple[PlanPart, ...] = ()

    @property
    def target(self) -> bool:
        return any(part.target for part in self.parts)

    def describe(self) -> str:
        """'step 5 (email_clients): loading the client directory took longer than 5 s'."""
        # outermost first reads naturally: "loading the client directory (waiting on ...)"
        names = [part.what for part in reversed(self.parts)]
        what = names[0] + "".join(f" ({name})" for name in names[1:]) if names else "the plan"
        return (f"step {step_number(self.step)} ({self.step.value}): {what} took longer than "
                f"{self.limit_seconds:g} s")
