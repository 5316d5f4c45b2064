"""A replica whose bot database stalls past its lease stops its step before anyone else may take
it; the replica that takes over decides; the stalled one, back, overwrites nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_events
from bot.db.session import make_engine, make_sessionmaker
from bot.domain.events import EventKind
from bot.domain.states import StepStatus
from bot.domain.steps import StepName
from bot.engine.engine import Engine
from bot.settings import Settings
from tests.crash.db_proxy import PausableProxy
from tests.engine.fake_steps import ScriptedStep, as_steps
from tests.engine.test_engine_flow import BOB, CAROL, start, waiting_click

SETTINGS = Settings(_env_file=None, step_timeout_seconds=60,  # type: ignore[call-arg]
                    step_lease_seconds=1.5)


@pytest.fixture
async def proxy(bot_db_url: str) -> AsyncIterator[PausableProxy]:
    proxy = PausableProxy.for_url(bot_db_url)
    await proxy.start()
    yield proxy
    await proxy.close()


async def until(predicate: Callable[[], bool], within: float = 20) -> None:
    """Poll with a deadline (the step's counters are plain attributes)."""
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.05)


async def test_a_stalled_replica_stops_its_step_before_the_takeover(
    bot_db_url: str, bot_sessionmaker: async_sessionmaker[AsyncSession],
    proxy: PausableProxy, steps: dict[StepName, ScriptedStep],
) -> None:
    steps[StepName.BACKUP].hold = asyncio.Event()  # runs until stopped
    stalled_db = make_engine(proxy.url_through(bot_db_url))
    first = Engine(make_sessionmaker(stalled_db), SETTINGS, as_steps(steps), replica_id="a")
    second = Engine(bot_sessionmaker, SETTINGS, as_steps(steps), replica_id="b")
    try:
        run_id = await start(first)
        await first.approve(await waiting_click(first, run_id, StepName.BACKUP, BOB))
        await first.approve(await waiting_click(first, run_id, StepName.BACKUP, CAROL))
        await asyncio.wait_for(steps[StepName.BACKUP].entered.wait(), 10)
        await second.recover(watch=True)  # the other replica watches leases all along
        proxy.pause()  # replica a's database stalls: its renewals go unanswered
        await until(lambda: steps[StepName.BACKUP].stopped == 1)
        await until(lambda: len(steps[StepName.BACKUP].running_at_check) == 2)
        # The verdict is written after the check: wait for it, not for the check alone.
        for _ in range(400):
            status = (await second.run_view(run_id)).steps[0].status
            if status is StepStatus.INTERRUPTED:
                break
            await asyncio.sleep(0.05)
        assert status is StepStatus.INTERRUPTED, "the replica that took over decided"
        proxy.resume()  # a is back: its copy of the step ended; it must not overwrite b's verdict
        await asyncio.wait_for(first.wait_idle(), 20)
        view = await second.run_view(run_id)
    finally:
        await first.shutdown()
        await second.shutdown()
        await stalled_db.dispose()
    step = steps[StepName.BACKUP]
    assert step.runs == 1 and step.stopped == 1
    assert step.running_at_check == [0, 0], "the takeover found no copy still running"
    assert view.steps[0].status is StepStatus.INTERRUPTED
    assert "Retry needs two fresh approvals" in (view.steps[0].summary or "")
    async with bot_sessionmaker() as session:
        kinds = [e.kind for e in await repo_events.all_events(session, run_id)]
    ends = [k for k in kinds if k in (EventKind.STEP_INTERRUPTED, EventKind.STEP_FAILED,
                                      EventKind.STEP_SUCCEEDED, EventKind.STEP_ALREADY_DONE)]
    assert ends == [EventKind.STEP_INTERRUPTED], "one ending, written by the replica that knew"
