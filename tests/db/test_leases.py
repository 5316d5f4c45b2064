"""Leases decide which replica executes a step: exclusive while fresh, reclaimable when expired."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_runs
from bot.domain.states import StepStatus
from bot.domain.steps import StepName


async def test_lease_is_exclusive_until_it_expires(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with bot_sessionmaker() as s, s.begin():
        run = await repo_runs.create_run(s, initiator_id="U1", initiator_name="alice",
                                         reason="r", source="slack", channel_id="C1")
        assert not isinstance(run, repo_runs.ActiveRunExists)
        ex = await repo_runs.create_step_execution(s, str(run.id), StepName.BACKUP, 1, {}, "fp")
        await repo_runs.set_execution_status(s, ex.id, StepStatus.RUNNING)
        execution_id = str(ex.id)
    async with bot_sessionmaker() as s, s.begin():
        assert await repo_runs.claim_lease(s, execution_id, "replica-a", 30)
    async with bot_sessionmaker() as s, s.begin():
        assert not await repo_runs.claim_lease(s, execution_id, "replica-b", 30)
        assert await repo_runs.find_orphaned_running(s) == []
    async with bot_sessionmaker() as s, s.begin():
        await repo_runs.expire_lease(s, execution_id)
    async with bot_sessionmaker() as s, s.begin():
        assert [str(e.id) for e in await repo_runs.find_orphaned_running(s)] == [execution_id]
        assert await repo_runs.claim_lease(s, execution_id, "replica-b", 30)
    async with bot_sessionmaker() as s, s.begin():
        assert not await repo_runs.renew_lease(s, execution_id, "replica-a", 30)
        assert await repo_runs.renew_lease(s, execution_id, "replica-b", 30)
