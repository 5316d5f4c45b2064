"""Two replicas on one bot database: one executes a step, the other takes over when it dies."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.states import StepStatus
from bot.domain.steps import StepName
from bot.engine.engine import Engine
from bot.settings import Settings
from tests.engine.fake_steps import as_steps, scripted_steps
from tests.engine.test_engine_flow import BOB, CAROL, start, waiting_click

SETTINGS = Settings(_env_file=None, step_timeout_seconds=30,  # type: ignore[call-arg]
                    step_lease_seconds=1.0)


async def test_one_executor_and_takeover_after_the_lease_expires(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    steps = scripted_steps()
    hold = asyncio.Event()
    steps[StepName.BACKUP].hold = hold
    first = Engine(bot_sessionmaker, SETTINGS, as_steps(steps), replica_id="replica-a")
    second = Engine(bot_sessionmaker, SETTINGS, as_steps(steps), replica_id="replica-b")
    try:
        run_id = await start(first)
        await first.approve(await waiting_click(first, run_id, StepName.BACKUP, BOB))
        await first.approve(await waiting_click(first, run_id, StepName.BACKUP, CAROL))
        await asyncio.wait_for(steps[StepName.BACKUP].entered.wait(), 10)
        execution_id = (await first.run_view(run_id)).steps[0].execution_id
        assert execution_id
        await second.executor.execute(execution_id)  # the other replica tries too
        assert steps[StepName.BACKUP].runs == 1, "a leased step runs on one replica only"

        changed = asyncio.Event()
        second.subscribe(lambda _run: changed.set())
        await first.shutdown()  # replica A dies mid-step; its lease is no longer renewed
        await second.recover(watch=True)  # B watches leases
        async with asyncio.timeout(15):
            while (await second.run_view(run_id)).steps[0].status is StepStatus.RUNNING:
                await changed.wait()
                changed.clear()
        view = await second.run_view(run_id)
        assert view.steps[0].status is StepStatus.INTERRUPTED
        assert steps[StepName.BACKUP].runs == 1
    finally:
        await first.shutdown()
        await second.shutdown()
