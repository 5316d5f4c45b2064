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
        return "No rollback is active." + await last_run_follow_ups_text(engine)
    view = await engine.run_view(run_id)
    lines = [f"Active rollback {view.run_id[:8]} by {view.initiator_name}: {view.reason}"]
    for step in view.steps:
        state = step.status.value if step.status else "not reached"
        lines.append(f"{step_number(step.step)}. {STEP_TITLES[step.step]}: {state}")
    return "\n".join(lines)


async def last_run_follow_ups_text(engine: Engine) -> str:
    """The open post-rollback actions of the last run (empty when there is none)."""
    from bot.db.repo_follow_ups import latest_run
    from bot.domain.follow_ups import done_count, follow_up_line, open_items

    async with engine.sessions() as session:
        run = await latest_run(session, engine.target)
    if run is None:
        return ""
    view = await engine.run_view(str(run.id))
    if not view.follow_ups:
        return ""
    still_open = open_items(view.follow_ups)
    lines = [f"\nLast rollback {view.run_id[:8]} ({view.status.value}): post-rollback actions "
             f"{done_count(view.follow_ups)}/{len(view.follow_ups)} done"
             + (", open:" if still_open else "; all done.")]
    lines += [f"  {follow_up_line(item)}" for item in still_open]
    return "\n".join(lines)
