"""Plain-text renderings shared by the Slack ephemeral answers and the terminal front."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.domain.step_protocol import Plan
from bot.domain.steps import STEP_TITLES, step_number

if TYPE_CHECKING:
    from bot.engine.engine import Engine


def plan_text(plan: Plan) -> str:
    lines = [f"{step_number(plan.step)}. {STEP_TITLES[plan.step]}: {plan.summary}"]
    lines += [f"    {detail}" for detail in plan.details]
    lines += [f"    ⚠ {warning}" for warning in plan.warnings]
    return "\n".join(lines)


def plans_text(plans: list[Plan]) -> str:
    return "\n".join(plan_text(plan) for plan in plans)


async def status_text(engine: Engine) -> str:
    run_id = await engine.active_run_id()
    if run_id is None:
        return "No rollback is active."
    view = await engine.run_view(run_id)
    lines = [f"Active rollback {view.run_id[:8]} by {view.initiator_name}: {view.reason}"]
    for step in view.steps:
        state = step.status.value if step.status else "not reached"
        lines.append(f"{step_number(step.step)}. {STEP_TITLES[step.step]}: {state}")
    return "\n".join(lines)
