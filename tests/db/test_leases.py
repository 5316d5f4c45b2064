"""Leases decide which replica executes a step: exclusive while fresh, reclaimable when expired."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_runs
from bot.db.ledgers import Fence, SqlNotificationLedger, SqlRotationLedger
from bot.db.session import make_engine, make_sessionmaker
from bot.domain.ledgers import NotificationRecord, NotificationStatus
from bot.domain.states import StepStatus
from bot.domain.step_protocol import LeaseLost
from bot.domain.steps import StepName
from tests.crash.db_proxy import PausableProxy


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


async def _running_execution(sessions: async_sessionmaker[AsyncSession]) -> str:
    async with sessions() as s, s.begin():
        run = await repo_runs.create_run(s, initiator_id="U1", initiator_name="alice",
                                         reason="r", source="slack", channel_id="C1")
        assert not isinstance(run, repo_runs.ActiveRunExists)
        ex = await repo_runs.create_step_execution(s, str(run.id), StepName.BACKUP, 1, {}, "fp")
        await repo_runs.set_execution_status(s, ex.id, StepStatus.RUNNING)
        return str(ex.id)


async def test_no_replica_clock_enters_lease_sql(bot_db_url: str) -> None:
    """A replica whose clock is off by minutes judges leases exactly as the others do: every
    instant in lease SQL is the database server's; the replica sends only seconds."""
    engine = make_engine(bot_db_url)
    sent: list[tuple[str, object]] = []

    def record(_conn: object, _cursor: object, statement: str, parameters: object,
               _context: object, _many: bool) -> None:
        sent.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    sessions = make_sessionmaker(engine)
    try:
        execution_id = await _running_execution(sessions)
        sent.clear()
        async with sessions() as s, s.begin():
            assert await repo_runs.claim_lease(s, execution_id, "replica-a", 600)
            assert await repo_runs.renew_lease(s, execution_id, "replica-a", 600)
            assert await repo_runs.find_orphaned_running(s) == []
            await repo_runs.expire_lease(s, execution_id)
            assert len(await repo_runs.find_orphaned_running(s)) == 1
            await repo_runs.release_lease(s, execution_id, "replica-a")
    finally:
        await engine.dispose()
    lease_sql = [(sql, params) for sql, params in sent if "lease_expires_at" in sql]
    assert len(lease_sql) == 6  # claim, renew, two orphan searches, expire, release
    for sql, params in lease_sql:
        values = list(params.values() if isinstance(params, dict) else params or ())
        assert not [v for v in values if isinstance(v, datetime | date | time)], sql
    judged = [sql for sql, params in lease_sql if None not in list(params or ())]  # not release
    assert len(judged) == 5 and all("clock_timestamp()" in sql for sql in judged), judged


async def test_lease_expiry_is_counted_on_the_database_clock_in_any_time_zone(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Replicas in different time zones (one at UTC+14, one at UTC-10) agree on who holds a
    lease and when it lapses: the expiry is an instant on the server's clock."""
    execution_id = await _running_execution(bot_sessionmaker)
    async with bot_sessionmaker() as s, s.begin():
        await s.execute(text("SET LOCAL TIME ZONE 'Pacific/Kiritimati'"))
        assert await repo_runs.claim_lease(s, execution_id, "replica-east", 600)
    async with bot_sessionmaker() as s, s.begin():
        await s.execute(text("SET LOCAL TIME ZONE 'America/Adak'"))
        left = (await s.execute(text(
            "SELECT extract(epoch FROM lease_expires_at - clock_timestamp()) "
            "FROM step_executions WHERE id = :id"), {"id": execution_id})).scalar_one()
        assert 590 < float(left) <= 600
        assert not await repo_runs.claim_lease(s, execution_id, "replica-west", 600)
        assert await repo_runs.find_orphaned_running(s) == []
    async with bot_sessionmaker() as s, s.begin():
        await s.execute(text("SET LOCAL TIME ZONE 'America/Adak'"))
        await repo_runs.expire_lease(s, execution_id)
    async with bot_sessionmaker() as s, s.begin():
        await s.execute(text("SET LOCAL TIME ZONE 'Pacific/Kiritimati'"))
        assert [str(e.id) for e in await repo_runs.find_orphaned_running(s)] == [execution_id]
        assert await repo_runs.claim_lease(s, execution_id, "replica-west", 600)


async def test_ledger_marks_are_written_only_while_the_execution_holds_its_lease(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Two copies of step 5 can never both mark a client `sending`: once another replica holds
    the execution, the first copy's ledgers refuse (LeaseLost) and write nothing."""
    execution_id = await _running_execution(bot_sessionmaker)
    async with bot_sessionmaker() as s:
        run_id = str((await repo_runs.get_execution(s, execution_id)).run_id)  # type: ignore[union-attr]
    async with bot_sessionmaker() as s, s.begin():
        assert await repo_runs.claim_lease(s, execution_id, "replica-a", 600)
    first = SqlNotificationLedger(bot_sessionmaker, Fence(execution_id, "replica-a"))
    keys = SqlRotationLedger(bot_sessionmaker, Fence(execution_id, "replica-a"))
    sending = NotificationRecord("c" * 64, NotificationStatus.SENDING, "a@example.com", 1)
    await first.save(run_id, sending)
    await keys.record(run_id, {"o" * 64: "n" * 64})

    async with bot_sessionmaker() as s, s.begin():  # replica a stalls; b takes the step over
        await repo_runs.expire_lease(s, execution_id)
        assert await repo_runs.claim_lease(s, execution_id, "replica-b", 600)
    late = NotificationRecord("d" * 64, NotificationStatus.SENDING, "b@example.com", 1)
    with pytest.raises(LeaseLost):
        await first.save(run_id, late)
    with pytest.raises(LeaseLost):
        await first.save(run_id, NotificationRecord("c" * 64, NotificationStatus.SENT,
                                                    "a@example.com", 1))
    with pytest.raises(LeaseLost):
        await keys.record(run_id, {"p" * 64: "q" * 64})
    records = await first.records(run_id)
    assert {h: r.status for h, r in records.items()} == {"c" * 64: NotificationStatus.SENDING}
    assert await keys.mapping(run_id) == {"o" * 64: "n" * 64}
    second = SqlNotificationLedger(bot_sessionmaker, Fence(execution_id, "replica-b"))
    await second.save(run_id, late)  # the holder writes
    assert set(await second.records(run_id)) == {"c" * 64, "d" * 64}


async def test_a_replica_stalled_mid_renewal_does_not_hold_its_step_for_ever(
    bot_db_url: str, bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Replica a renews its lease, then its connection stalls before COMMIT (a partition, a
    stuck event loop): the renewal's row lock would block replica b's takeover for as long as
    the dead TCP connection lives. The server ends a's idle transaction; b takes over, and a's
    renewal never lands."""
    proxy = PausableProxy.for_url(bot_db_url)
    await proxy.start()
    stalled_db = make_engine(proxy.url_through(bot_db_url), stalled_transaction_after=1)
    stalled = make_sessionmaker(stalled_db)
    execution_id = await _running_execution(bot_sessionmaker)
    try:
        async with bot_sessionmaker() as s, s.begin():
            assert await repo_runs.claim_lease(s, execution_id, "replica-a", 1)
        session = stalled()
        await session.begin()
        assert await repo_runs.renew_lease(session, execution_id, "replica-a", 1)
        proxy.pause()  # the COMMIT will not arrive; the row stays locked by a
        async with asyncio.timeout(60):  # a deadline, not a measurement: without the bound,
            while True:                  # b waits on the lock for ever
                async with bot_sessionmaker() as s, s.begin():
                    if await repo_runs.claim_lease(s, execution_id, "replica-b", 30):
                        break
                await asyncio.sleep(0.1)
        proxy.resume()
        with pytest.raises(DBAPIError):
            await session.commit()
        await session.close()
        async with bot_sessionmaker() as s:
            execution = await repo_runs.get_execution(s, execution_id)
            assert execution is not None and execution.lease_owner == "replica-b"
    finally:
        await stalled_db.dispose()
        await proxy.close()
