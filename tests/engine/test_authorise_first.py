"""A click is authorised before any plan is computed; only a click that counts re-plans; live
row counts are shown but do not void approvals."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_events
from bot.domain.events import EventKind
from bot.domain.states import StepStatus
from bot.domain.step_protocol import Step
from bot.domain.steps import STEP_ORDER, StepName
from bot.engine.engine import Click, Engine
from bot.urls import libpq_url
from sandbox.migrate import migrate
from steps.rotate_keys import RotateKeysStep
from tests.engine.fake_steps import ScriptedStep, scripted_steps
from tests.engine.test_engine_flow import (
    ALICE,
    BOB,
    CAROL,
    MALLORY,
    approve_twice,
    start,
    waiting_click,
)
from tests.steps.sandbox_settings import sandbox_settings


async def test_a_click_that_would_not_count_removes_nothing_and_asks_nothing(
    engine: Engine, steps: dict[StepName, ScriptedStep]
) -> None:
    run_id = await start(engine)
    bob = await waiting_click(engine, run_id, StepName.BACKUP, BOB)
    assert (await engine.approve(bob)).accepted
    plans = steps[StepName.BACKUP].plans
    steps[StepName.BACKUP].plan_facts["size"] = "2 GB"  # the target moved since bob approved
    for click in (Click(MALLORY, run_id, bob.execution_id, bob.fingerprint),  # not an approver
                  Click(ALICE, run_id, bob.execution_id, bob.fingerprint),  # the initiator
                  bob,  # twice
                  Click(CAROL, run_id, bob.execution_id, "0" * 16)):  # an older copy's button
        answer = await engine.approve(click)
        assert not answer.accepted and answer.refusal is not None
    assert steps[StepName.BACKUP].plans == plans, "no refused click queried the target"
    view = await engine.run_view(run_id)
    assert [a.user_name for a in view.steps[0].approvers] == ["bob"], "bob's approval stands"
    assert view.steps[0].plan is not None and view.steps[0].plan.fingerprint == bob.fingerprint
    async with engine.sessions() as session:
        kinds = [e.kind for e in await repo_events.all_events(session, run_id)]
    assert EventKind.APPROVALS_VOIDED not in kinds
    assert kinds.count(EventKind.REFUSED) == 4


async def insert_sessions_until(url: str, stop: asyncio.Event) -> int:
    """A live service writing: new sessions of existing clients, one after another."""
    conn = await asyncpg.connect(libpq_url(url))
    inserted = 0
    try:
        while not stop.is_set():
            await conn.execute(
                "INSERT INTO sessions (id, model, working_directory, owner_api_key_hash)"
                " SELECT gen_random_uuid(), 'claude-sonnet-4', '/tmp', owner_api_key_hash"
                " FROM sessions WHERE owner_api_key_hash IS NOT NULL"
                " ORDER BY random() LIMIT 1")
            inserted += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.01):
                    await stop.wait()
    finally:
        await conn.close()
    return inserted


async def test_two_approvals_start_step_4_on_a_target_taking_inserts(
    bot_sessionmaker: async_sessionmaker[AsyncSession], target_db_url: str, tmp_path: Path,
) -> None:
    await migrate(target_db_url, "20260201_000006", down=True)  # as after step 2
    scripted = scripted_steps()
    steps: dict[StepName, Step] = {**scripted, StepName.ROTATE_KEYS: RotateKeysStep()}
    settings = sandbox_settings(target_db_url, tmp_path, step_timeout_seconds=60)
    engine = Engine(bot_sessionmaker, settings, steps, replica_id="inserts")
    stop = asyncio.Event()
    writer = asyncio.create_task(insert_sessions_until(target_db_url, stop))
    try:
        run_id = await start(engine)
        for step in STEP_ORDER[:3]:
            await approve_twice(engine, run_id, step)
        shown = (await engine.run_view(run_id)).steps[3]
        for actor in (BOB, CAROL):
            answer = await engine.approve(
                await waiting_click(engine, run_id, StepName.ROTATE_KEYS, actor))
            assert answer.accepted, answer
        stop.set()
        assert await writer > 0
        await engine.wait_idle()
        view = await engine.run_view(run_id)
    finally:
        stop.set()
        await engine.shutdown()
    rotate = view.steps[3]
    assert {a.user_name for a in rotate.approvers} == {"bob", "carol"}
    assert rotate.status in (StepStatus.SUCCEEDED, StepStatus.FAILED)  # it started and ended
    assert shown.plan is not None and rotate.plan is not None
    assert rotate.plan.fingerprint == shown.plan.fingerprint, "row counts moved, plan did not"
    async with bot_sessionmaker() as session:
        kinds = [e.kind for e in await repo_events.all_events(session, run_id)]
    assert EventKind.APPROVALS_VOIDED not in kinds
    assert EventKind.STEP_STARTED in kinds
