"""A plan past PLAN_TIMEOUT_SECONDS says what was slow: "target busy" only when it was waiting on
the target; otherwise the step and, where the step marked it, the part (the client directory)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.approvals import REFUSAL_TEXT, Refusal, slow_plan_refusal
from bot.domain.step_protocol import Plan, StepContext
from bot.domain.steps import StepName
from bot.engine.engine import Engine
from bot.engine.plans import PUT_UP_FACTOR, PlanTimeout, bounded_plan, safe_plan
from steps.email_clients import EmailClientsStep
from steps.target_db import connect
from tests.engine.fake_steps import ScriptedStep, as_steps
from tests.engine.test_engine_flow import ALICE
from tests.steps.step_context import settings_for, step_context

LIMIT = 0.3


class WaitsOnTarget(ScriptedStep):
    async def plan(self, ctx: StepContext) -> Plan:
        async with connect(ctx.settings.target_database_url.get_secret_value()) as conn:
            await conn.execute("SELECT pg_sleep(60)")
        raise AssertionError("the deadline should have cancelled the plan")


class Dawdles(ScriptedStep):
    async def plan(self, ctx: StepContext) -> Plan:
        await asyncio.sleep(60)
        raise AssertionError("the deadline should have cancelled the plan")


async def test_a_plan_stuck_loading_the_directory_is_refused_naming_it(
    stuck_directory: Path,
) -> None:
    ctx = step_context(settings_for(client_directory=stuck_directory,
                                    plan_timeout_seconds=LIMIT))
    with pytest.raises(PlanTimeout) as caught:
        await bounded_plan(EmailClientsStep(), ctx)
    slow = caught.value.slow
    assert slow.describe() == ("step 5 (email_clients): loading the client directory took "
                               "longer than 0.3 s")
    refusal, text = slow_plan_refusal(slow)
    assert refusal is Refusal.PLAN_TOO_SLOW
    assert "target" not in text and text.startswith(slow.describe())
    # The plan approvers see (before anyone clicks) says the same.
    shown = await safe_plan(EmailClientsStep(), ctx)
    assert shown.warnings == (f"could not compute the plan: {slow.describe()}",)


async def test_a_plan_waiting_on_the_target_is_target_busy(empty_db_url: str) -> None:
    ctx = step_context(settings_for(target_database_url=empty_db_url,
                                    plan_timeout_seconds=LIMIT))
    with pytest.raises(PlanTimeout) as caught:
        await bounded_plan(WaitsOnTarget(StepName.ROTATE_KEYS), ctx)
    assert caught.value.slow.describe() == ("step 4 (rotate_keys): waiting on the target "
                                            "database took longer than 0.3 s")
    refusal, text = slow_plan_refusal(caught.value.slow)
    assert refusal is Refusal.TARGET_BUSY and text.startswith(REFUSAL_TEXT[refusal])


async def test_a_directory_query_slow_on_the_target_names_both(empty_db_url: str) -> None:
    query = "SELECT 'A' AS name, 'a@a.test' AS email, 'x' AS api_key_sha256 FROM pg_sleep(60)"
    ctx = step_context(settings_for(target_database_url=empty_db_url, plan_timeout_seconds=LIMIT,
                                    client_directory_query=query))
    with pytest.raises(PlanTimeout) as caught:
        await bounded_plan(EmailClientsStep(), ctx)
    assert caught.value.slow.describe() == (
        "step 5 (email_clients): loading the client directory (waiting on the target database) "
        "took longer than 0.3 s")
    assert slow_plan_refusal(caught.value.slow)[0] is Refusal.TARGET_BUSY


async def test_a_plan_slow_elsewhere_names_only_its_step() -> None:
    ctx = step_context(settings_for(plan_timeout_seconds=LIMIT))
    with pytest.raises(PlanTimeout) as caught:
        await bounded_plan(Dawdles(StepName.BACKUP), ctx)
    assert caught.value.slow.describe() == "step 1 (backup): the plan took longer than 0.3 s"
    assert slow_plan_refusal(caught.value.slow)[0] is Refusal.PLAN_TOO_SLOW


async def test_a_plan_put_up_for_approval_gets_the_longer_deadline(
    stuck_directory: Path, bot_sessionmaker: async_sessionmaker[AsyncSession],
    steps: dict[StepName, ScriptedStep],
) -> None:
    """Nobody's click waits on the plan of a step being put up, and it may be the first to
    parse a large directory: it gets PUT_UP_FACTOR times PLAN_TIMEOUT_SECONDS (here the
    directory never comes, so the plan shown says which deadline it was given)."""
    settings = settings_for(client_directory=stuck_directory, plan_timeout_seconds=LIMIT)
    engine = Engine(bot_sessionmaker, settings,
                    as_steps({**steps, StepName.BACKUP: EmailClientsStep()}),  # type: ignore[dict-item]
                    replica_id="test-replica")
    try:
        answer = await engine.start_run(ALICE, "Phase 3 broke auth", "C_ONCALL")
        assert answer.accepted and answer.run_id
        shown = (await engine.run_view(answer.run_id)).steps[0]
    finally:
        await engine.shutdown()
    limit = LIMIT * PUT_UP_FACTOR
    assert shown.plan is not None
    assert shown.plan.warnings == (
        f"could not compute the plan: step 5 (email_clients): loading the client directory "
        f"took longer than {limit:g} s",)
