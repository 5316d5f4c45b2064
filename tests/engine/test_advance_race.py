"""Two replicas move one run on at the same moment: the replica whose step just ended, and the
other replica's lease watcher, which finds the run "stalled" (its last step done, nothing put up
after it) in the instant between the step's end and the next step being put up. One of them
puts the next step up (or ends the run); the other notices and does nothing: no error, no
second execution row, no second event, and the run goes on as if only one had looked.

The instant is held open with the database, as a slow commit would: a second connection holds
the run's row as a transition writing the run would (`FOR NO KEY UPDATE`), so the step's end
(its own row, its event) commits while whatever writes the run next waits; the watcher's pass
starts then, and the row is let go once both are waiting on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_events, repo_runs
from bot.domain.events import EventKind
from bot.domain.states import RunStatus, StepStatus
from bot.domain.steps import STEP_ORDER, StepName
from bot.engine.engine import Click, Engine
from bot.settings import Settings
from tests.engine.fake_steps import ScriptedStep, as_steps, scripted_steps
from tests.engine.test_engine_flow import BOB, CAROL, approve_twice, start, waiting_click

SETTINGS = Settings(_env_file=None, step_timeout_seconds=30,  # type: ignore[call-arg]
                    step_lease_seconds=1.0)

LOCK_WAITERS = text("SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'")

Waiters = Callable[[], Awaitable[int]]
Replicas = tuple[dict[StepName, ScriptedStep], Engine, Engine]


@asynccontextmanager
async def run_row_held(sessions: async_sessionmaker[AsyncSession], run_id: str
                       ) -> AsyncIterator[Waiters]:
    """The run's row held from a connection of our own until the block ends; yields how many
    of the bot database's backends are waiting on a lock."""
    async with sessions() as holder, holder.begin():
        await holder.execute(text("SELECT 1 FROM rollback_runs WHERE id = :id FOR NO KEY UPDATE"),
                             {"id": run_id})

        async def waiting() -> int:
            async with sessions() as probe:
                return int((await probe.execute(LOCK_WAITERS)).scalar_one())

        yield waiting


async def until_waiting(waiting: Waiters, count: int, within: float = 15) -> None:
    """Poll the server with a deadline (nothing in this process can tell)."""
    async with asyncio.timeout(within):
        while True:
            if await waiting() >= count:
                return
            await asyncio.sleep(0.05)


@pytest.fixture
async def replicas(bot_sessionmaker: async_sessionmaker[AsyncSession]
                   ) -> AsyncIterator[Replicas]:
    """Two engines on one bot database (replicas a and b), shut down after the test."""
    steps = scripted_steps()
    first = Engine(bot_sessionmaker, SETTINGS, as_steps(steps), replica_id="replica-a")
    second = Engine(bot_sessionmaker, SETTINGS, as_steps(steps), replica_id="replica-b")
    try:
        yield steps, first, second
    finally:
        await first.shutdown()
        await second.shutdown()


@pytest.fixture
async def run_id(replicas: Replicas) -> str:
    """A run started on the first replica, its backup waiting for approvals."""
    return await start(replicas[1])


@pytest.fixture(autouse=True)
def nothing_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The loser of a race stands down quietly: no replica logs an error (or a failed pass)."""
    caplog.set_level(logging.WARNING)
    yield


async def end_step_while_the_other_replica_looks(
    sessions: async_sessionmaker[AsyncSession], steps: dict[StepName, ScriptedStep],
    executing: Engine, watching: Engine, run_id: str, step: StepName,
) -> None:
    """`step` runs on `executing` (held in run()); it ends while `watching` makes one pass of
    its lease watcher, both reaching the run's next write together."""
    hold = asyncio.Event()
    steps[step].hold = hold
    await executing.approve(await waiting_click(executing, run_id, step, BOB))
    await executing.approve(await waiting_click(executing, run_id, step, CAROL))
    await asyncio.wait_for(steps[step].entered.wait(), 10)
    async with run_row_held(sessions, run_id) as waiting:
        hold.set()  # the step ends; its replica moves the run on and waits on the run's row
        await until_waiting(waiting, 1)
        watch = asyncio.create_task(watching.recover(watch=False))  # one pass of the watcher
        await until_waiting(waiting, 2)
    await watch  # the pass that lost must end as a pass that found nothing to do
    await executing.wait_idle()
    steps[step].hold = None


async def test_a_step_ends_while_another_replica_finds_the_run_stalled(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
    replicas: Replicas, run_id: str,
) -> None:
    steps, first, second = replicas
    await end_step_while_the_other_replica_looks(
        bot_sessionmaker, steps, first, second, run_id, StepName.BACKUP)

    async with first.sessions() as session:
        executions = [e for e in await repo_runs.executions_for_run(session, run_id)
                      if e.step == StepName.DOWNGRADE.value]
        shown = [e for e in await repo_events.events_of_kind(
            session, run_id, EventKind.PLAN_SHOWN) if e.step == StepName.DOWNGRADE.value]
    assert [(e.attempt, e.status) for e in executions] == [
        (1, StepStatus.AWAITING_APPROVAL.value)], "step 2 is put up once"
    assert len(shown) == 1, "the thread shows step 2's plan once"

    for step in STEP_ORDER[1:]:  # the run goes on, each step run once
        await approve_twice(first, run_id, step)
    assert all(steps[step].runs == 1 for step in STEP_ORDER)
    assert (await first.run_view(run_id)).status is RunStatus.COMPLETED


async def test_the_last_step_ends_while_another_replica_finds_the_run_stalled(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
    replicas: Replicas, run_id: str,
) -> None:
    steps, first, second = replicas
    for step in STEP_ORDER[:-1]:
        await approve_twice(first, run_id, step)
    await end_step_while_the_other_replica_looks(
        bot_sessionmaker, steps, first, second, run_id, StepName.VERIFY)

    async with first.sessions() as session:
        completed = await repo_events.events_of_kind(session, run_id, EventKind.RUN_COMPLETED)
    assert len(completed) == 1, "the run is completed once, in one log entry"
    assert (await first.run_view(run_id)).status is RunStatus.COMPLETED
    assert all(steps[step].runs == 1 for step in STEP_ORDER)


async def test_two_retries_at_once_put_up_one_attempt(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
    replicas: Replicas, run_id: str,
) -> None:
    """Bob clicks Retry on one replica, Carol on the other, before either new attempt is up."""
    steps, first, second = replicas
    steps[StepName.BACKUP].fail_times = 1
    await approve_twice(first, run_id, StepName.BACKUP)
    failed = (await first.run_view(run_id)).steps[0]
    assert failed.status is StepStatus.FAILED and failed.execution_id
    async with run_row_held(bot_sessionmaker, run_id) as waiting:
        bob = asyncio.create_task(first.retry(Click(BOB, run_id, failed.execution_id)))
        await until_waiting(waiting, 1)
        carol = asyncio.create_task(second.retry(Click(CAROL, run_id, failed.execution_id)))
        await until_waiting(waiting, 2)
    answers = await asyncio.gather(bob, carol)
    assert all(a.accepted for a in answers), answers

    async with first.sessions() as session:
        attempts = [e.attempt for e in await repo_runs.executions_for_run(session, run_id)
                    if e.step == StepName.BACKUP.value]
    assert attempts == [1, 2], "one new attempt, not two"
    await approve_twice(first, run_id, StepName.BACKUP)
    assert steps[StepName.BACKUP].runs == 2
    assert (await first.run_view(run_id)).steps[0].status is StepStatus.SUCCEEDED
