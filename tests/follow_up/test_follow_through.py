"""The follow-through watcher on a real bot database, paging a fake PagerDuty Events API: what
on-call would see (alerts opened and resolved), what the log records, and that a paging outage
never holds a rollback up. Time-based rules run on the database's clock: a test back-dates the
row (a step put up 20 minutes ago, an approval given 61 minutes ago) instead of waiting."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_events
from bot.domain.events import EventKind, Source
from bot.domain.follow_ups import FollowUpAction, FollowUpItem
from bot.domain.paging_policy import escalation_dedup_key, run_dedup_key
from bot.domain.states import RunStatus, StepStatus
from bot.domain.steps import STEP_ORDER, StepName
from bot.engine.engine import Actor, Engine
from bot.engine.follow_through import FollowThrough
from bot.engine.follow_up_actions import act_on_follow_up, escalate
from bot.paging.events_api import PagerDutyEvents
from bot.settings import Settings
from tests.engine.fake_steps import ScriptedStep, as_steps, scripted_steps
from tests.engine.test_engine_flow import ALICE, BOB, CAROL, MALLORY, start, waiting_click
from tests.pagerwire.fake_events_api import FakeEventsApi
from tests.pagerwire.fixtures import ROUTING_KEY


@pytest.fixture
def steps() -> dict[StepName, ScriptedStep]:
    return scripted_steps()


def make_settings(fake: FakeEventsApi | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"step_timeout_seconds": 30, "page_retry_seconds": 0,
                              "approver_user_ids": "U_ALICE,U_BOB,U_CAROL", **overrides}
    if fake is not None:
        values.update(pagerduty_routing_key=ROUTING_KEY, pagerduty_events_url=fake.url)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class Rig:
    def __init__(self, engine: Engine, follow: FollowThrough, pager: PagerDutyEvents | None):
        self.engine, self.follow, self.pager = engine, follow, pager

    async def events(self, run_id: str, kind: EventKind) -> list[Any]:
        async with self.engine.sessions() as session:
            return [e for e in await repo_events.all_events(session, run_id)
                    if e.kind == kind.value]

    async def sql(self, statement: str, **params: Any) -> None:
        async with self.engine.sessions() as session, session.begin():
            await session.execute(text(statement), params)


async def make_rig(sessions: async_sessionmaker[AsyncSession], steps: dict[StepName, ScriptedStep],
                   fake: FakeEventsApi | None, **overrides: Any) -> Rig:
    settings = make_settings(fake, **overrides)
    engine = Engine(sessions, settings, as_steps(steps), replica_id="follow-test")
    pager = None if fake is None else PagerDutyEvents(ROUTING_KEY, fake.url, backoff_seconds=0)
    return Rig(engine, FollowThrough(engine, pager), pager)


@pytest.fixture
async def rig(
    bot_sessionmaker: async_sessionmaker[AsyncSession], steps: dict[StepName, ScriptedStep],
    fake_pagerduty: FakeEventsApi,
) -> AsyncIterator[Rig]:
    made = await make_rig(bot_sessionmaker, steps, fake_pagerduty)
    yield made
    await made.engine.shutdown()
    if made.pager is not None:
        await made.pager.close()


async def approve_step(engine: Engine, run_id: str, step: StepName) -> None:
    for actor in (BOB, CAROL):
        assert (await engine.approve(await waiting_click(engine, run_id, step, actor))).accepted
    await engine.wait_idle()


async def test_a_run_opens_one_alert_and_its_end_resolves_it(
    rig: Rig, fake_pagerduty: FakeEventsApi,
) -> None:
    run_id = await start(rig.engine)
    await rig.follow.pass_once([run_id])
    alert = fake_pagerduty.open_alert(run_dedup_key(run_id))
    assert alert is not None and "started by alice" in alert.summary
    for step in STEP_ORDER:
        await approve_step(rig.engine, run_id, step)
    await rig.follow.pass_once([run_id])
    assert (await rig.engine.run_view(run_id)).status is RunStatus.COMPLETED
    assert [a.status for a in fake_pagerduty.alerts_for(run_dedup_key(run_id))] == ["resolved"]
    sent = await rig.events(run_id, EventKind.PAGE_SENT)
    assert [(e.data["action"], e.data["trigger"]) for e in sent] == [
        ("trigger", "start"), ("resolve", "resolve")]
    assert all(ROUTING_KEY not in str(e.data) for e in sent)
    await rig.follow.pass_once([run_id])  # delivered once, not again
    assert len(fake_pagerduty.events) == 2


async def test_a_failed_step_pages_and_an_outage_never_holds_the_rollback_up(
    rig: Rig, fake_pagerduty: FakeEventsApi, steps: dict[StepName, ScriptedStep],
) -> None:
    fake_pagerduty.outage(503)
    steps[StepName.DOWNGRADE].fail_times = 1
    run_id = await start(rig.engine)
    rig.follow.start()  # the watcher runs beside the engine, as in `serve`
    try:
        await approve_step(rig.engine, run_id, StepName.BACKUP)
        await approve_step(rig.engine, run_id, StepName.DOWNGRADE)
        view = await rig.engine.run_view(run_id)
        failed = next(s for s in view.steps if s.step is StepName.DOWNGRADE)
        assert failed.status is StepStatus.FAILED
        answer = await rig.engine.retry(await _click_retry(rig.engine, run_id))
        assert answer.accepted
        for step in STEP_ORDER[1:]:
            await approve_step(rig.engine, run_id, step)
        assert (await rig.engine.run_view(run_id)).status is RunStatus.COMPLETED

        async def failures() -> set[str]:
            return {e.data["for_kind"] for e in await rig.events(run_id, EventKind.PAGE_FAILED)}

        deadline = asyncio.get_running_loop().time() + 30
        while {"run_started", "step_failed"} - await failures():
            assert asyncio.get_running_loop().time() < deadline, await failures()
            await asyncio.sleep(0.05)
    finally:
        await rig.follow.stop()
    failed_pages = await rig.events(run_id, EventKind.PAGE_FAILED)
    assert all(e.data["attempts"] == 4 and "503" in e.data["error"] for e in failed_pages)
    assert fake_pagerduty.events == []  # nothing got through, and nothing was resolved
    # PagerDuty comes back: the next run pages again.
    fake_pagerduty.recover()


async def _click_retry(engine: Engine, run_id: str) -> Any:
    from bot.engine.engine import Click

    view = await engine.run_view(run_id)
    step = next(s for s in view.steps if s.status is StepStatus.FAILED)
    assert step.execution_id is not None
    return Click(ALICE, run_id, step.execution_id)


async def test_failure_page_says_which_step_and_why(
    rig: Rig, fake_pagerduty: FakeEventsApi, steps: dict[StepName, ScriptedStep],
) -> None:
    steps[StepName.BACKUP].fail_times = 1
    run_id = await start(rig.engine)
    await approve_step(rig.engine, run_id, StepName.BACKUP)
    await rig.follow.pass_once([run_id])
    failure = [e for e in fake_pagerduty.events_with("trigger")
               if e["payload"]["class"] == "failure"]
    assert len(failure) == 1
    assert "step 1/6" in failure[0]["payload"]["summary"]
    assert "backup failed on purpose" in failure[0]["payload"]["summary"]
    assert failure[0]["payload"]["severity"] == "error"
    assert failure[0]["dedup_key"] == run_dedup_key(run_id)


async def test_reminders_then_one_overdue_page_and_they_stop_once_the_step_starts(
    bot_sessionmaker: async_sessionmaker[AsyncSession], steps: dict[StepName, ScriptedStep],
    fake_pagerduty: FakeEventsApi,
) -> None:
    rig = await make_rig(bot_sessionmaker, steps, fake_pagerduty, approval_reminder_minutes=15,
                         approval_page_minutes=30)
    try:
        run_id = await start(rig.engine)
        await rig.follow.pass_once([run_id])
        assert await rig.events(run_id, EventKind.APPROVAL_REMINDED) == []
        await rig.sql("UPDATE step_executions SET created_at = now() - interval '20 minutes'")
        await rig.follow.pass_once([run_id])
        await rig.follow.pass_once([run_id])  # reminded a moment ago: not again
        reminders = await rig.events(run_id, EventKind.APPROVAL_REMINDED)
        assert len(reminders) == 1
        assert reminders[0].data["mention_user_ids"] == ["U_BOB", "U_CAROL"]  # not the initiator
        assert reminders[0].data["waited_minutes"] == 20
        assert await rig.events(run_id, EventKind.APPROVAL_OVERDUE) == []
        await rig.engine.approve(await waiting_click(rig.engine, run_id, StepName.BACKUP, BOB))
        await rig.sql("UPDATE step_executions SET created_at = now() - interval '31 minutes'")
        await rig.follow.pass_once([run_id])
        assert len(await rig.events(run_id, EventKind.APPROVAL_OVERDUE)) == 1
        waiting = [e for e in fake_pagerduty.events_with("trigger")
                   if e["payload"]["class"] == "waiting"]
        assert len(waiting) == 1 and "(1/2)" in waiting[0]["payload"]["summary"]
        await rig.engine.approve(await waiting_click(rig.engine, run_id, StepName.BACKUP, CAROL))
        await rig.engine.wait_idle()
        await rig.follow.pass_once([run_id])
        await rig.follow.pass_once([run_id])
        assert len(await rig.events(run_id, EventKind.APPROVAL_REMINDED)) == 1
        assert len(await rig.events(run_id, EventKind.APPROVAL_OVERDUE)) == 1
    finally:
        await rig.engine.shutdown()
        assert rig.pager is not None
        await rig.pager.close()


async def test_reminders_recur_at_most_every_n_minutes(
    bot_sessionmaker: async_sessionmaker[AsyncSession], steps: dict[StepName, ScriptedStep],
) -> None:
    """Thresholds in fractions of a minute: the watcher's own loop, driven for real."""
    rig = await make_rig(bot_sessionmaker, steps, None, approval_reminder_minutes=0.01,
                         approval_page_minutes=0, follow_through_interval_seconds=0.05)
    rig.follow.interval = 0.05
    try:
        run_id = await start(rig.engine)
        rig.follow.start()
        deadline = asyncio.get_running_loop().time() + 30
        while len(reminders := await rig.events(run_id, EventKind.APPROVAL_REMINDED)) < 3:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        await rig.follow.stop()
        gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(reminders)]
        assert all(gap >= 0.6 for gap in gaps), gaps  # never more often than every 0.01 min
    finally:
        await rig.follow.stop()
        await rig.engine.shutdown()


async def test_an_expired_approval_no_longer_counts_and_a_late_click_does_not_start_alone(
    rig: Rig, steps: dict[StepName, ScriptedStep],
) -> None:
    run_id = await start(rig.engine)
    await rig.engine.approve(await waiting_click(rig.engine, run_id, StepName.BACKUP, BOB))
    await rig.sql("UPDATE approvals SET created_at = now() - interval '61 minutes'")
    answer = await rig.engine.approve(await waiting_click(rig.engine, run_id, StepName.BACKUP,
                                                          CAROL))
    await rig.engine.wait_idle()
    assert answer.accepted
    assert steps[StepName.BACKUP].runs == 0, "an hour-old approval must not start a step"
    view = await rig.engine.run_view(run_id)
    backup = view.steps[0]
    assert backup.status is StepStatus.AWAITING_APPROVAL
    assert [(a.user_name, a.expired) for a in backup.approvers] == [("bob", True),
                                                                    ("carol", False)]
    expired = await rig.events(run_id, EventKind.APPROVAL_EXPIRED)
    assert [e.data["user_name"] for e in expired] == ["bob"]
    # Bob approves again: his approval is renewed and, with Carol's, the step starts.
    again = await rig.engine.approve(await waiting_click(rig.engine, run_id, StepName.BACKUP, BOB))
    await rig.engine.wait_idle()
    assert again.accepted and steps[StepName.BACKUP].runs == 1
    started = await rig.events(run_id, EventKind.STEP_STARTED)
    assert sorted(started[0].data["approvers"]) == ["bob", "carol"]


async def test_the_watcher_records_expiry_without_a_click(rig: Rig) -> None:
    run_id = await start(rig.engine)
    await rig.engine.approve(await waiting_click(rig.engine, run_id, StepName.BACKUP, BOB))
    await rig.sql("UPDATE approvals SET created_at = now() - interval '2 hours'")
    await rig.follow.pass_once([run_id])
    await rig.follow.pass_once([run_id])
    assert len(await rig.events(run_id, EventKind.APPROVAL_EXPIRED)) == 1
    assert (await rig.engine.run_view(run_id)).steps[0].approvers[0].expired


async def test_a_quorum_nobody_can_reach_pages_once(
    rig: Rig, fake_pagerduty: FakeEventsApi,
) -> None:
    async def only_alice_and_bob() -> frozenset[str]:  # Carol left the group mid-run
        return frozenset({"U_ALICE", "U_BOB"})

    rig.follow.approvers = only_alice_and_bob
    run_id = await start(rig.engine)  # Alice started it: only Bob may approve
    await rig.follow.pass_once([run_id])
    await rig.follow.pass_once([run_id])
    noted = await rig.events(run_id, EventKind.QUORUM_UNREACHABLE)
    assert len(noted) == 1 and noted[0].data["eligible_left"] == 1
    quorum = [e for e in fake_pagerduty.events_with("trigger")
              if e["payload"]["class"] == "quorum"]
    assert len(quorum) == 1 and quorum[0]["payload"]["severity"] == "error"


async def test_escalation_pages_critical_on_its_own_alert_and_is_resolved_at_the_end(
    rig: Rig, fake_pagerduty: FakeEventsApi,
) -> None:
    run_id = await start(rig.engine)
    refused = await escalate(rig.engine, MALLORY, run_id, "let me in")
    assert not refused.accepted
    answer = await escalate(rig.engine, CAROL, run_id, "customers <!channel> cannot log in")
    assert answer.accepted
    await rig.follow.pass_once([run_id])
    alert = fake_pagerduty.open_alert(escalation_dedup_key(run_id))
    assert alert is not None and alert.severity == "critical"
    assert "ESCALATION by carol" in alert.summary
    page = next(e for e in fake_pagerduty.events_with("trigger")
                if e["dedup_key"] == escalation_dedup_key(run_id))
    assert page["payload"]["custom_details"]["escalated_by"] == "carol"
    assert page["payload"]["custom_details"]["steps"]["1 backup"] == "awaiting_approval"
    recorded = await rig.events(run_id, EventKind.ESCALATED)
    assert recorded[0].actor == "U_CAROL" and recorded[0].data["user_name"] == "carol"
    for step in STEP_ORDER:
        await approve_step(rig.engine, run_id, step)
    await rig.follow.pass_once([run_id])
    assert all(a.status == "resolved" for a in fake_pagerduty.alerts)
    assert len(fake_pagerduty.alerts) == 2


async def test_no_routing_key_pages_nobody(
    bot_sessionmaker: async_sessionmaker[AsyncSession], steps: dict[StepName, ScriptedStep],
    fake_pagerduty: FakeEventsApi,
) -> None:
    rig = await make_rig(bot_sessionmaker, steps, None)
    try:
        run_id = await start(rig.engine)
        await rig.follow.pass_once([run_id])
        assert await rig.events(run_id, EventKind.PAGE_SENT) == []
        assert fake_pagerduty.requests == []
    finally:
        await rig.engine.shutdown()


async def test_two_replicas_page_each_event_once(
    bot_sessionmaker: async_sessionmaker[AsyncSession], steps: dict[StepName, ScriptedStep],
    fake_pagerduty: FakeEventsApi,
) -> None:
    one = await make_rig(bot_sessionmaker, steps, fake_pagerduty)
    two = await make_rig(bot_sessionmaker, steps, fake_pagerduty)
    try:
        run_id = await start(one.engine)
        await escalate(one.engine, BOB, run_id, "now")
        await asyncio.gather(one.follow.pass_once([run_id]), two.follow.pass_once([run_id]),
                             one.follow.pass_once([run_id]), two.follow.pass_once([run_id]))
        assert len(fake_pagerduty.events) == 2  # the start and the escalation, once each
    finally:
        for made in (one, two):
            await made.engine.shutdown()
            assert made.pager is not None
            await made.pager.close()


async def test_follow_ups_are_owned_and_closed_after_the_run_ends(rig: Rig) -> None:
    run_id = await start(rig.engine)
    early = await act_on_follow_up(rig.engine, BOB, run_id, FollowUpItem.ROOT_CAUSE,
                                   FollowUpAction.OWN)
    assert not early.accepted and "ended" in early.message
    for step in STEP_ORDER:
        await approve_step(rig.engine, run_id, step)
    view = await rig.engine.run_view(run_id)
    assert [f.item for f in view.follow_ups] == list(FollowUpItem)
    assert not any(f.done or f.owner_name for f in view.follow_ups)
    assert (await act_on_follow_up(rig.engine, BOB, run_id, FollowUpItem.ROOT_CAUSE,
                                   FollowUpAction.OWN)).accepted
    assert not (await act_on_follow_up(rig.engine, MALLORY, run_id, FollowUpItem.ROOT_CAUSE,
                                       FollowUpAction.DONE)).accepted
    terminal = Actor("terminal:dave", "dave", Source.TERMINAL, True)
    assert (await act_on_follow_up(rig.engine, terminal, run_id, FollowUpItem.ROOT_CAUSE,
                                   FollowUpAction.DONE)).accepted
    twice = await act_on_follow_up(rig.engine, CAROL, run_id, FollowUpItem.ROOT_CAUSE,
                                   FollowUpAction.DONE)
    assert not twice.accepted and "already done by dave" in twice.message
    root = (await rig.engine.run_view(run_id)).follow_ups[0]
    assert (root.owner_name, root.done_by_name, root.done) == ("bob", "dave", True)
    kinds = [e.kind for e in await rig.events(run_id, EventKind.FOLLOW_UP_OWNED)] + \
        [e.kind for e in await rig.events(run_id, EventKind.FOLLOW_UP_DONE)]
    assert kinds == ["follow_up_owned", "follow_up_done"]
