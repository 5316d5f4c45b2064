"""The engine on a real bot database with scripted steps: approvals, quorum, failure, retry,
rejection, recovery. What an engineer would notice: which steps ran, how often, and the log."""

from __future__ import annotations

import asyncio

from bot.db import repo_events, repo_runs
from bot.domain.events import EventKind, Source
from bot.domain.states import RunStatus, StepStatus
from bot.domain.steps import STEP_ORDER, StepName
from bot.engine.engine import Actor, Click, Engine
from tests.engine.fake_steps import ScriptedStep

ALICE = Actor("U_ALICE", "alice", Source.SLACK, authorised=True)
BOB = Actor("U_BOB", "bob", Source.SLACK, authorised=True)
CAROL = Actor("U_CAROL", "carol", Source.SLACK, authorised=True)
MALLORY = Actor("U_MALLORY", "mallory", Source.SLACK, authorised=False)


async def waiting_click(engine: Engine, run_id: str, step: StepName, actor: Actor) -> Click:
    view = await engine.run_view(run_id)
    sv = next(s for s in view.steps if s.step is step)
    assert sv.status is StepStatus.AWAITING_APPROVAL, sv
    assert sv.execution_id is not None and sv.plan is not None
    return Click(actor, run_id, sv.execution_id, sv.plan.fingerprint)


async def approve_twice(engine: Engine, run_id: str, step: StepName) -> None:
    for actor in (BOB, CAROL):
        answer = await engine.approve(await waiting_click(engine, run_id, step, actor))
        assert answer.accepted, answer
    await engine.wait_idle()


async def start(engine: Engine) -> str:
    answer = await engine.start_run(ALICE, "Phase 3 broke auth", "C_ONCALL")
    assert answer.accepted and answer.run_id
    return answer.run_id


async def test_six_steps_each_need_two_distinct_approvers(
    engine: Engine, steps: dict[StepName, ScriptedStep]
) -> None:
    run_id = await start(engine)
    for step in STEP_ORDER:
        first = await engine.approve(await waiting_click(engine, run_id, step, BOB))
        assert first.accepted
        assert steps[step].runs == 0, "one approval must not start a step"
        await engine.approve(await waiting_click(engine, run_id, step, CAROL))
        await engine.wait_idle()
        assert steps[step].runs == 1
    view = await engine.run_view(run_id)
    assert view.status is RunStatus.COMPLETED
    assert all(s.status is StepStatus.SUCCEEDED for s in view.steps)
    assert all({a.user_name for a in s.approvers} == {"bob", "carol"} for s in view.steps)
    async with engine.sessions() as session:
        kinds = [e.kind for e in await repo_events.all_events(session, run_id)]
    assert kinds[0] == EventKind.RUN_STARTED and kinds[-1] == EventKind.RUN_COMPLETED
    assert kinds.count(EventKind.STEP_SUCCEEDED) == 6
    assert kinds.count(EventKind.APPROVAL_GIVEN) == 12


async def test_refusals_change_nothing(engine: Engine, steps: dict[StepName, ScriptedStep]) -> None:
    run_id = await start(engine)
    click = await waiting_click(engine, run_id, StepName.BACKUP, BOB)
    own = await engine.approve(Click(ALICE, run_id, click.execution_id, click.fingerprint))
    outsider = await engine.approve(Click(MALLORY, run_id, click.execution_id, click.fingerprint))
    assert not own.accepted and "started this rollback" in own.message
    assert not outsider.accepted and "not an authorised" in outsider.message
    assert (await engine.approve(click)).accepted
    twice = await engine.approve(click)
    assert not twice.accepted and "already approved" in twice.message
    second = await engine.start_run(CAROL, "again", "C_ONCALL")
    assert not second.accepted and second.run_id == run_id
    view = await engine.run_view(run_id)
    assert [a.user_name for a in view.steps[0].approvers] == ["bob"]
    assert steps[StepName.BACKUP].runs == 0


async def test_changed_plan_voids_approvals(
    engine: Engine, steps: dict[StepName, ScriptedStep]
) -> None:
    run_id = await start(engine)
    old = await waiting_click(engine, run_id, StepName.BACKUP, BOB)
    assert (await engine.approve(old)).accepted
    steps[StepName.BACKUP].plan_facts["size"] = "2 GB"  # the database grew
    stale = await engine.approve(Click(CAROL, run_id, old.execution_id, old.fingerprint))
    assert not stale.accepted and "plan changed" in stale.message
    view = await engine.run_view(run_id)
    assert view.steps[0].approvers == () and view.steps[0].plan is not None
    assert view.steps[0].plan.fingerprint != old.fingerprint
    assert steps[StepName.BACKUP].runs == 0


async def test_failed_step_retries_only_after_fresh_approvals(
    engine: Engine, steps: dict[StepName, ScriptedStep]
) -> None:
    steps[StepName.BACKUP].fail_times = 1
    run_id = await start(engine)
    await approve_twice(engine, run_id, StepName.BACKUP)
    view = await engine.run_view(run_id)
    failed = view.steps[0]
    assert failed.status is StepStatus.FAILED and "failed on purpose" in (failed.summary or "")
    assert "backup line 3" in failed.error_tail
    assert failed.execution_id is not None
    retry = await engine.retry(Click(BOB, run_id, failed.execution_id))
    assert retry.accepted
    assert steps[StepName.BACKUP].runs == 1, "retry must wait for approvals"
    await approve_twice(engine, run_id, StepName.BACKUP)
    view = await engine.run_view(run_id)
    assert view.steps[0].status is StepStatus.SUCCEEDED and view.steps[0].attempt == 2
    assert view.steps[1].status is StepStatus.AWAITING_APPROVAL


async def test_reject_stops_the_run_and_records_who_and_why(engine: Engine) -> None:
    run_id = await start(engine)
    click = await waiting_click(engine, run_id, StepName.BACKUP, BOB)
    answer = await engine.reject(click, "wrong database")
    assert answer.accepted
    view = await engine.run_view(run_id)
    assert view.status is RunStatus.ABORTED and view.abort_reason == "wrong database"
    assert view.steps[0].status is StepStatus.REJECTED
    late = await engine.approve(Click(CAROL, run_id, click.execution_id, click.fingerprint))
    assert not late.accepted
    assert (await engine.active_run_id()) is None


async def test_fifty_simultaneous_clicks_give_two_approvals_and_one_run(
    engine: Engine, steps: dict[StepName, ScriptedStep]
) -> None:
    run_id = await start(engine)
    base = await waiting_click(engine, run_id, StepName.BACKUP, BOB)
    clickers = [Actor(f"U{i:03d}", f"eng{i}", Source.SLACK, True) for i in range(50)]
    answers = await asyncio.gather(*(
        engine.approve(Click(a, run_id, base.execution_id, base.fingerprint)) for a in clickers
    ))
    await engine.wait_idle()
    assert sum(a.accepted for a in answers) == 2
    assert steps[StepName.BACKUP].runs == 1
    view = await engine.run_view(run_id)
    assert len(view.steps[0].approvers) == 2


async def test_orphaned_step_is_checked_then_interrupted_or_done(
    engine: Engine, steps: dict[StepName, ScriptedStep]
) -> None:
    """A replica died mid-step: its lease expired. `check` decides what the step is now."""
    hold = asyncio.Event()
    steps[StepName.BACKUP].hold = hold
    run_id = await start(engine)
    await engine.approve(await waiting_click(engine, run_id, StepName.BACKUP, BOB))
    await engine.approve(await waiting_click(engine, run_id, StepName.BACKUP, CAROL))
    async with asyncio.timeout(10):
        await steps[StepName.BACKUP].entered.wait()  # the step is inside run() now
    await engine.shutdown()  # the process dies: the step stays 'running'
    async with engine.sessions() as session, session.begin():
        view = await engine.run_view(run_id)
        execution_id = view.steps[0].execution_id
        assert view.steps[0].status is StepStatus.RUNNING and execution_id
        await repo_runs.expire_lease(session, execution_id)
    await engine.recover(watch=False)
    view = await engine.run_view(run_id)
    assert view.steps[0].status is StepStatus.INTERRUPTED
    assert steps[StepName.BACKUP].runs == 1, "recovery never re-runs a step blindly"
    retry = await engine.retry(Click(BOB, run_id, execution_id))
    assert retry.accepted
    steps[StepName.BACKUP].hold = None
    await approve_twice(engine, run_id, StepName.BACKUP)
    assert (await engine.run_view(run_id)).steps[0].status is StepStatus.SUCCEEDED
