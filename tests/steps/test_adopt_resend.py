"""An email left uncertain by a crash belongs to the rotation, not to the run it happened in:
the run that continues the rotation names it, ends completed with unconfirmed deliveries, and
its Resend sends to exactly that client (real engine, real steps 4 and 5, a real SMTP server)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.ledgers import SqlNotificationLedger
from bot.domain.ledgers import NotificationStatus
from bot.domain.states import RunStatus, StepStatus
from bot.engine.engine import Click, Engine
from bot.settings import Settings
from tests.engine.test_engine_flow import BOB, CAROL, start, waiting_click
from tests.fixtures.sandbox import SandboxSeed
from tests.fixtures.smtp import SmtpServer
from tests.steps.test_adopt_rotation import (  # noqa: F401 (fixtures)
    BEFORE_KEYS,
    S,
    approve,
    engines,
    recovered,
    settings_for_run,
    step_view,
)
from tests.steps.test_email_resend import until

pytestmark = pytest.mark.usefixtures("phase2_api")  # the canary tries keys on it


async def test_an_email_in_flight_when_the_bot_died_is_resent_by_the_run_that_continues(
    sandbox_seed: SandboxSeed, smtp_server: SmtpServer,
    settings_for_run: Callable[..., Settings], engines: Callable[..., Engine],  # noqa: F811
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    contacts = [c for c in sandbox_seed.result.clients if c.has_contact]
    in_flight = contacts[1]
    settings = settings_for_run()
    first = engines(settings, "replica-a")
    run1 = await start(first)
    await approve(first, run1, *BEFORE_KEYS, S.ROTATE_KEYS)
    smtp_server.stall(in_flight.email)  # its DATA is held: the bot dies meanwhile
    for actor in (BOB, CAROL):
        assert (await first.approve(await waiting_click(first, run1, S.EMAIL_CLIENTS,
                                                        actor))).accepted
    ledger = SqlNotificationLedger(bot_sessionmaker)

    async def held() -> bool:
        records = await ledger.records(run1)
        return (smtp_server.handler.stalling == {in_flight.email}
                and in_flight.key_hash in records
                and records[in_flight.key_hash].status is NotificationStatus.SENDING)

    await until(held)
    await first.shutdown()  # the bot dies with that email in DATA (and any others in flight)
    smtp_server.unstall()
    uncertain = sorted(h for h, r in (await ledger.records(run1)).items()
                       if r.status is NotificationStatus.SENDING)
    assert in_flight.key_hash in uncertain
    others = [c for c in contacts if c.key_hash not in uncertain]

    second = engines(settings, "replica-b")
    interrupted = await recovered(second, run1, S.EMAIL_CLIENTS)  # step 5's check: not done
    assert interrupted.status is StepStatus.INTERRUPTED
    assert (await second.abort(Click(BOB, run1, interrupted.execution_id), "restart")).accepted
    mailed_before = {c.email: len(smtp_server.to(c.email)) for c in contacts}

    run2 = await start(second)
    await approve(second, run2, *BEFORE_KEYS, S.ROTATE_KEYS, S.EMAIL_CLIENTS, S.VERIFY)
    view = await second.run_view(run2)
    assert view.status is RunStatus.COMPLETED_UNCONFIRMED, "not plain completed"
    assert view.unconfirmed == tuple(h[:8] for h in uncertain)
    assert {c.email: len(smtp_server.to(c.email)) for c in contacts} == mailed_before | {
        c.email: 1 for c in others}, "the uncertain never re-sent without people deciding"

    step5 = await step_view(second, run2, S.EMAIL_CLIENTS)
    assert step5.resend is not None and step5.resend.offered
    assert step5.resend.clients == view.unconfirmed

    async def resend(engine: Engine) -> None:
        view = await step_view(engine, run2, S.EMAIL_CLIENTS)
        for actor in (BOB, CAROL):
            click = Click(actor, run2, view.execution_id, view.resend.fingerprint)
            assert (await engine.resend(click)).accepted

    smtp_server.stall(in_flight.email)  # and the bot dies again, in the resend's DATA
    await resend(second)

    async def resend_held() -> bool:
        return smtp_server.handler.stalling == {in_flight.email}

    await until(resend_held)
    await second.shutdown()
    smtp_server.unstall()
    third = engines(settings, "replica-c")
    await third.recover(watch=True)  # the resend's lease lapses: examined, not done

    async def resend_examined() -> bool:
        resend_view = (await step_view(third, run2, S.EMAIL_CLIENTS)).resend
        return resend_view is not None and resend_view.status is not StepStatus.RUNNING

    await until(resend_examined)
    examined = (await step_view(third, run2, S.EMAIL_CLIENTS)).resend
    assert examined is not None and examined.status is StepStatus.INTERRUPTED, examined
    assert examined.summary and "still unconfirmed" in examined.summary, examined.summary
    view = await third.run_view(run2)
    assert view.status is RunStatus.COMPLETED_UNCONFIRMED, "still nobody can confirm it"
    assert view.unconfirmed == tuple(h[:8] for h in uncertain)

    sent = {c.email: len(smtp_server.to(c.email)) for c in contacts}
    await resend(third)
    await third.wait_idle()
    assert {c.email: len(smtp_server.to(c.email)) for c in contacts} == sent | {
        c.email: sent[c.email] + 1 for c in contacts if c.key_hash in uncertain}
    assert all(len(smtp_server.to(c.email)) == 1 for c in others), "nobody else again"
    assert (await third.run_view(run2)).status is RunStatus.COMPLETED
