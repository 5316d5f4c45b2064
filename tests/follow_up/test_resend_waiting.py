"""A Resend waiting for its second approval is nudged as a waiting step is: reminders mention
who may still approve, and past `APPROVAL_PAGE_MINUTES` a "waiting" page goes out, on an alert of
its own (the run's alert was resolved when the run ended), resolved when the resend finishes.
The real bot database and follow-through watcher, a fake PagerDuty at its wire; the clock is
moved by back-dating the resend's row, as the step tests do."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.events import EventKind
from bot.domain.paging_policy import resend_dedup_key, run_dedup_key
from bot.domain.states import RunStatus
from bot.domain.steps import STEP_ORDER, StepName
from bot.slack.follow_up_blocks import notice
from tests.engine.fake_steps import ScriptedEmailStep, ScriptedStep, client_hash, scripted_steps
from tests.engine.test_engine_flow import BOB, CAROL, start
from tests.engine.test_resend_flow import resend_click
from tests.follow_up.test_follow_through import approve_step, make_rig
from tests.pagerwire.fake_events_api import FakeEventsApi

CLIENTS = tuple(client_hash(f"client-{n}") for n in range(4))
IN_FLIGHT = (CLIENTS[0], CLIENTS[2])
BACK_DATE_RESEND = ("UPDATE step_executions SET created_at = now() - make_interval(mins => :m) "
                    "WHERE kind = 'resend'")


@pytest.fixture
def steps() -> dict[StepName, ScriptedStep]:
    scripted = scripted_steps()
    scripted[StepName.EMAIL_CLIENTS] = ScriptedEmailStep(clients=CLIENTS, in_flight=IN_FLIGHT)
    return scripted


async def test_a_waiting_resend_is_reminded_and_paged_on_its_own_alert_until_it_finishes(
    bot_sessionmaker: async_sessionmaker[AsyncSession], steps: dict[StepName, ScriptedStep],
    fake_pagerduty: FakeEventsApi,
) -> None:
    rig = await make_rig(bot_sessionmaker, steps, fake_pagerduty, approval_reminder_minutes=15,
                         approval_page_minutes=30)
    try:
        run_id = await start(rig.engine)
        for step in STEP_ORDER:
            await approve_step(rig.engine, run_id, step)
        await rig.follow.pass_once([run_id])
        assert (await rig.engine.run_view(run_id)).status is RunStatus.COMPLETED_UNCONFIRMED
        assert [a.status for a in fake_pagerduty.alerts_for(run_dedup_key(run_id))] == [
            "resolved"], "the run's own alert closed with the run"

        assert (await resend_click(rig.engine, run_id, BOB)).accepted  # 1/2: it waits
        await rig.follow.pass_once([run_id])
        assert await rig.events(run_id, EventKind.APPROVAL_REMINDED) == []
        await rig.sql(BACK_DATE_RESEND, m=20)
        await rig.follow.pass_once()  # an ended run: found by its waiting resend
        await rig.follow.pass_once()  # reminded a moment ago: not again
        reminders = await rig.events(run_id, EventKind.APPROVAL_REMINDED)
        assert len(reminders) == 1
        reminder = reminders[0].data
        assert reminder["resend"] is True and reminder["waited_minutes"] == 20
        assert reminder["mention_user_ids"] == ["U_CAROL"], "not the initiator, not Bob again"
        shown = notice(EventKind.APPROVAL_REMINDED, StepName.EMAIL_CLIENTS.value, reminder,
                       await rig.engine.run_view(run_id))
        assert shown is not None
        assert "<@U_CAROL>: the Resend to 2 unconfirmed clients of Step 5/6" in str(shown[1])
        assert await rig.events(run_id, EventKind.APPROVAL_OVERDUE) == []

        await rig.sql(BACK_DATE_RESEND, m=31)
        await rig.follow.pass_once()
        await rig.follow.pass_once()
        assert len(await rig.events(run_id, EventKind.APPROVAL_OVERDUE)) == 1
        execution_id = reminder["execution_id"]
        alert = fake_pagerduty.open_alert(resend_dedup_key(run_id, execution_id))
        assert alert is not None, "the waiting resend has an open alert of its own"
        assert "the Resend to 2 unconfirmed clients" in alert.summary and "(1/2)" in alert.summary
        waiting = [e for e in fake_pagerduty.events_with("trigger")
                   if e["payload"]["class"] == "waiting"]
        assert len(waiting) == 1 and waiting[0]["payload"]["severity"] == "warning"

        assert (await resend_click(rig.engine, run_id, CAROL)).accepted  # 2/2: it sends
        await rig.follow.pass_once([run_id])
        assert (await rig.engine.run_view(run_id)).status is RunStatus.COMPLETED
        assert [a.status for a in fake_pagerduty.alerts_for(
            resend_dedup_key(run_id, execution_id))] == ["resolved"]
        await rig.follow.pass_once([run_id])
        assert len(await rig.events(run_id, EventKind.APPROVAL_REMINDED)) == 1
        assert len(await rig.events(run_id, EventKind.APPROVAL_OVERDUE)) == 1
    finally:
        await rig.engine.shutdown()
        assert rig.pager is not None
        await rig.pager.close()
