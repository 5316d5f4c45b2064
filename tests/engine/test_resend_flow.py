"""Resend to the uncertain clients, driven through the engine with scripted steps: no SMTP, the
real bot database and its notification ledger as the engine hands them to step 5. What an
engineer would notice: who may resend, when the emails go out (and how often), the run's
status, and the approvals step 5's message shows."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from bot.db import repo_events
from bot.domain.approvals import Refusal
from bot.domain.events import EventKind
from bot.domain.states import RunStatus, StepStatus
from bot.domain.steps import STEP_ORDER, StepName
from bot.domain.views import ResendView
from bot.engine.engine import Actor, Answer, Click, Engine
from bot.engine.follow_through import FollowThrough
from tests.engine.fake_steps import ScriptedEmailStep, ScriptedStep, client_hash, scripted_steps
from tests.engine.test_engine_flow import ALICE, BOB, CAROL, approve_twice, start

EMAIL = StepName.EMAIL_CLIENTS
CLIENTS = tuple(client_hash(f"client-{n}") for n in range(5))
IN_FLIGHT = (CLIENTS[1], CLIENTS[3])  # DATA under way when the bot died: uncertain


@pytest.fixture
def steps() -> dict[StepName, ScriptedStep]:
    scripted = scripted_steps()
    scripted[EMAIL] = ScriptedEmailStep(clients=CLIENTS, in_flight=IN_FLIGHT)
    return scripted


def email_step(steps: dict[StepName, ScriptedStep]) -> ScriptedEmailStep:
    step = steps[EMAIL]
    assert isinstance(step, ScriptedEmailStep)
    return step


async def resend_shown(engine: Engine, run_id: str) -> ResendView:
    view = await engine.run_view(run_id)
    step5 = next(s for s in view.steps if s.step is EMAIL)
    assert step5.resend is not None, step5
    return step5.resend


async def resend_click(engine: Engine, run_id: str, actor: Actor) -> Answer:
    """A click on the Resend button as step 5's message shows it now."""
    view = await engine.run_view(run_id)
    step5 = next(s for s in view.steps if s.step is EMAIL)
    assert step5.execution_id is not None and step5.resend is not None
    answer = await engine.resend(Click(actor, run_id, step5.execution_id,
                                       step5.resend.fingerprint))
    await engine.wait_idle()
    return answer


async def run_to_the_end(engine: Engine, run_id: str) -> None:
    for step in STEP_ORDER:
        await approve_twice(engine, run_id, step)


async def age_resend_approvals(engine: Engine, run_id: str, minutes: int) -> None:
    """The clock moves on for the resend's approvals (as the watcher tests do for steps')."""
    async with engine.sessions() as session, session.begin():
        await session.execute(text(
            "UPDATE approvals SET created_at = now() - make_interval(mins => :minutes) "
            "WHERE step_execution_id IN (SELECT id FROM step_executions WHERE run_id = :run "
            "AND kind = 'resend')"), {"minutes": minutes, "run": run_id})


async def test_two_distinct_engineers_resend_once_and_the_run_becomes_completed(
    engine: Engine, steps: dict[StepName, ScriptedStep]
) -> None:
    run_id = await start(engine)
    await run_to_the_end(engine, run_id)
    view = await engine.run_view(run_id)
    assert view.status is RunStatus.COMPLETED_UNCONFIRMED
    assert view.unconfirmed == tuple(sorted(c[:8] for c in IN_FLIGHT))
    shown = await resend_shown(engine, run_id)
    assert shown.offered and shown.clients == view.unconfirmed

    own = await resend_click(engine, run_id, ALICE)
    assert own.refusal is Refusal.OWN_RUN
    first = await resend_click(engine, run_id, BOB)
    assert first.accepted
    assert email_step(steps).resent == [], "one approval sends nothing"
    twice = await resend_click(engine, run_id, BOB)
    assert twice.refusal is Refusal.ALREADY_APPROVED
    shown = await resend_shown(engine, run_id)
    assert [(a.user_name, a.expired) for a in shown.approvers] == [("bob", False)]
    assert shown.status is StepStatus.AWAITING_APPROVAL and email_step(steps).resent == []

    second = await resend_click(engine, run_id, CAROL)
    assert second.accepted
    assert email_step(steps).resent == [tuple(sorted(IN_FLIGHT))], "sent once, to exactly them"
    view = await engine.run_view(run_id)
    assert view.status is RunStatus.COMPLETED and view.unconfirmed == ()
    shown = await resend_shown(engine, run_id)
    assert not shown.offered and shown.status is StepStatus.SUCCEEDED
    assert shown.summary == "2 of 2 unconfirmed clients emailed again"

    again = await resend_click(engine, run_id, BOB)
    assert again.refusal is Refusal.NOTHING_TO_RESEND
    assert email_step(steps).resent == [tuple(sorted(IN_FLIGHT))]
    assert (await engine.run_view(run_id)).status is RunStatus.COMPLETED


async def test_an_expired_first_approval_does_not_combine_with_a_fresh_second(
    engine: Engine, steps: dict[StepName, ScriptedStep]
) -> None:
    run_id = await start(engine)
    await run_to_the_end(engine, run_id)
    assert (await resend_click(engine, run_id, BOB)).accepted
    await age_resend_approvals(engine, run_id, 61)  # past APPROVAL_TTL_MINUTES (60)
    late = await resend_click(engine, run_id, CAROL)
    assert late.accepted
    assert email_step(steps).resent == [], "an hour-old approval must not send with a new one"
    shown = await resend_shown(engine, run_id)
    assert [(a.user_name, a.expired) for a in shown.approvers] == [("bob", True),
                                                                   ("carol", False)]
    assert (await engine.run_view(run_id)).status is RunStatus.COMPLETED_UNCONFIRMED
    # Bob approves again: renewed, and with Carol's fresh approval the resend goes out.
    assert (await resend_click(engine, run_id, BOB)).accepted
    assert email_step(steps).resent == [tuple(sorted(IN_FLIGHT))]
    assert (await engine.run_view(run_id)).status is RunStatus.COMPLETED


async def test_the_watcher_records_a_resend_approval_expiring_without_a_click(
    engine: Engine,
) -> None:
    """The run has ended (no longer the active one) and nobody clicks: the follow-through
    still notices the resend's approval expired, and step 5's message can say so."""
    run_id = await start(engine)
    await run_to_the_end(engine, run_id)
    assert (await resend_click(engine, run_id, BOB)).accepted
    await age_resend_approvals(engine, run_id, 120)
    watcher = FollowThrough(engine, pager=None)
    await watcher.pass_once()
    await watcher.pass_once()
    async with engine.sessions() as session:
        expired = await repo_events.events_of_kind(session, run_id, EventKind.APPROVAL_EXPIRED)
    assert [(e.data["user_name"], e.data.get("resend")) for e in expired] == [("bob", True)]
    shown = await resend_shown(engine, run_id)
    assert [(a.user_name, a.expired) for a in shown.approvers] == [("bob", True)]


async def test_a_run_continuing_a_rotation_resends_its_uncertain_clients(
    engine: Engine, steps: dict[StepName, ScriptedStep]
) -> None:
    """Run 1 re-keyed and began mailing, then was aborted at step 5: its mail ledger belongs to
    the rotation, which run 2 continues. Run 2 must still count the uncertain clients."""
    email_step(steps).fail_times = 1
    first = await start(engine)
    for step in STEP_ORDER[:5]:
        await approve_twice(engine, first, step)
    failed = next(s for s in (await engine.run_view(first)).steps if s.step is EMAIL)
    assert failed.status is StepStatus.FAILED and failed.execution_id is not None
    assert (await engine.abort(Click(BOB, first, failed.execution_id), "try again")).accepted

    second = await start(engine)
    await run_to_the_end(engine, second)
    view = await engine.run_view(second)
    assert view.status is RunStatus.COMPLETED_UNCONFIRMED, "never plain completed"
    assert view.unconfirmed == tuple(sorted(c[:8] for c in IN_FLIGHT))
    assert (await resend_click(engine, second, BOB)).accepted
    assert (await resend_click(engine, second, CAROL)).accepted
    assert email_step(steps).resent == [tuple(sorted(IN_FLIGHT))]
    assert (await engine.run_view(second)).status is RunStatus.COMPLETED
