"""Plans that never raise: an unreachable dependency becomes a warning approvers can read."""

from __future__ import annotations

import logging
from typing import Any

from bot.domain.step_protocol import Plan, Step, StepContext

log = logging.getLogger(__name__)


async def safe_plan(step: Step, ctx: StepContext) -> Plan:
    try:
        return await step.plan(ctx)
    except Exception as exc:
        log.warning("plan for %s failed: %s", step.name, exc)
        return Plan(
            step=step.name,
            summary="plan unavailable",
            facts={"plan_error": str(exc)},
            warnings=(f"could not compute the plan: {exc}",),
        )


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as stored on its step execution (and drawn by the fronts)."""
    return {
        "summary": plan.summary,
        "facts": dict(plan.facts),
        "details": list(plan.details),
        "warnings": list(plan.warnings),
    }
