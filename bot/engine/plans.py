"""Plans under a deadline, and plans that never raise.

A plan asks the live target questions, and reads inputs such as the client directory; on a busy
target (a held lock, a slow disk) or a slow input those can hang. `bounded_plan` gives up after
`PLAN_TIMEOUT_SECONDS` (the target's connections also carry lock and statement timeouts), so an
Approve click is answered within seconds and never holds a reply slot for long. What it was
doing then (`bot.domain.plan_parts`) goes with the `PlanTimeout`: "target busy" only when it was
waiting on the target, otherwise the step and the part that was slow. `safe_plan` turns any
failure into a warning approvers read.

A plan being put up (a run starts, a step ends, a Retry) has nobody's click waiting on it, and
may be the first to read a large input: it gets `PUT_UP_FACTOR` times the deadline (at 100,000
clients the client directory's first parse takes about 5 s, the default deadline), and the
clicks that follow find that input cached.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bot.domain.plan_parts import SlowPlan, traced
from bot.domain.redaction import Redactor
from bot.domain.step_protocol import Plan, Step, StepContext
from bot.domain.steps import StepName

log = logging.getLogger(__name__)

PUT_UP_FACTOR = 6


class PlanTimeout(Exception):
    """The plan did not finish in time; `slow` says which step and, where known, which part."""

    def __init__(self, slow: SlowPlan) -> None:
        super().__init__(slow.describe())
        self.slow = slow


async def bounded_plan(step: Step, ctx: StepContext, limit: float | None = None) -> Plan:
    """The step's plan within `limit` (default: the plan deadline); PlanTimeout after it."""
    limit = ctx.settings.plan_timeout_seconds if limit is None else limit
    with traced() as trace:
        try:
            async with asyncio.timeout(limit):
                return redacted_plan(await step.plan(ctx), Redactor.for_settings(ctx.settings))
        except TimeoutError:
            raise PlanTimeout(SlowPlan(step.name, limit, tuple(trace.interrupted))) from None


def redacted_plan(plan: Plan, redact: Redactor) -> Plan:
    """A plan leaves its step like everything else: through the redactor."""
    return Plan(step=plan.step, summary=redact(plan.summary), facts=redact.value(plan.facts),
                details=tuple(redact(d) for d in plan.details),
                warnings=tuple(redact(w) for w in plan.warnings),
                volatile=redact.value(plan.volatile))


def error_plan(step: StepName, exc: Exception, redact: Redactor) -> Plan:
    """What approvers see when a plan failed (the same failure, the same fingerprint)."""
    why = redact(str(exc))
    log.warning("plan for %s failed: %s", step, why)
    return Plan(
        step=step,
        summary="plan unavailable",
        facts={"plan_error": why},
        warnings=(f"could not compute the plan: {why}",),
    )


async def safe_plan(step: Step, ctx: StepContext, limit: float | None = None) -> Plan:
    try:
        return await bounded_plan(step, ctx, limit)
    except Exception as exc:
        return error_plan(step.name, exc, Redactor.for_settings(ctx.settings))


async def put_up_plan(step: Step, ctx: StepContext) -> Plan:
    """The plan of a step being put up for approval: nobody's click waits on it."""
    return await safe_plan(step, ctx, ctx.settings.plan_timeout_seconds * PUT_UP_FACTOR)


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as stored on its step execution (and drawn by the fronts)."""
    return {
        "summary": plan.summary,
        "facts": dict(plan.facts),
        "volatile": dict(plan.volatile),
        "details": list(plan.details),
        "warnings": list(plan.warnings),
    }
