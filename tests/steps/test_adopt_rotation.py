"""A rotation belongs to the target, not to a run: Abort or Reject once step 4 has begun, then a
new run, on the real engine with the real steps 4 and 5 (sandbox target after the downgrade, a
real SMTP server; steps 1-3 and 6 scripted). Whatever the stop, in the end every client has one
key on all its rows, each contact is mailed exactly once, and no work table is left."""

from __future__ import annotations

import asyncio
import csv
import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_rotations
from bot.db.ledgers import SqlRotationLedger
from bot.domain.states import RunStatus, StepStatus
from bot.domain.step_protocol import Outcome, OutputSink, Step, StepContext
from bot.domain.steps import StepName
from bot.engine.engine import Click, Engine
from bot.settings import Settings
from bot.slack.blocks import step_message
from bot.terminal.render import status_board
from bot.urls import libpq_url
from steps.registry import default_steps
from steps.rotate_keys import work_table
from tests.engine.fake_steps import ScriptedStep
from tests.engine.test_engine_flow import BOB, CAROL, approve_twice, start, waiting_click
from tests.fixtures.sandbox import SandboxSeed
from tests.fixtures.smtp import SmtpServer
from tests.steps.conftest import keys_by_old_hash, owned_rows
from tests.steps.sandbox_settings import sandbox_settings
from tests.steps.test_rotate_keys import add_padded_clients, assert_one_key_per_client, work_tables

pytestmark = pytest.mark.usefixtures("phase2_api")  # the canary tries keys on it

S = StepName
BEFORE_KEYS = (S.BACKUP, S.DOWNGRADE, S.RESTART)
PADDED = 6


class DiesMidway:
    """Step 4 as registered, but the bot dies right after its `die_at`-th batch: the task ends
    as a killed process's would (nothing recorded, the lease left to lapse)."""

    def __init__(self, inner: Step, die_at: int) -> None:
        self.inner, self.name, self.die_at = inner, inner.name, die_at

    async def plan(self, ctx: StepContext) -> Any:
        return await self.inner.plan(ctx)

    async def check(self, ctx: StepContext) -> Any:
        return await self.inner.check(ctx)

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        batches = 0

        def dying(line: str) -> None:
            nonlocal batches
            emit(line)
            batches += line.startswith("batch ")
            if batches == self.die_at:
                raise asyncio.CancelledError

        return await self.inner.run(ctx, dying)


def with_padded_contacts(directory: Path, tmp_path: Path) -> Path:
    """The seeded directory plus a contact for each client `add_padded_clients` made."""
    copy = tmp_path / "clients.csv"
    rows = list(csv.reader(directory.open()))
    rows += [[f"Padded {n}", f"padded{n}@example.test",
              hashlib.sha256(f"padded{n}".encode()).hexdigest()] for n in range(PADDED)]
    with copy.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return copy


def contacts_of(directory: Path) -> dict[str, str]:
    """email -> old hash, for every contact the directory lists."""
    return {row["email"]: row["api_key_sha256"] for row in csv.DictReader(directory.open())}


@pytest.fixture
def settings_for_run(phase2_target_url: str, tmp_path: Path, smtp_server: SmtpServer,
                     sandbox_seed: SandboxSeed) -> Callable[..., Settings]:
    def make(directory: Path | None = None) -> Settings:
        return sandbox_settings(
            phase2_target_url, tmp_path, mailer="smtp", smtp_host=smtp_server.host,
            smtp_port=smtp_server.port, client_directory=directory or sandbox_seed.directory_csv,
            rotation_batch_pages=1, rotation_max_batch_pages=1, rotation_workers=1,
            step_lease_seconds=3.0,
            step_timeout_seconds=120, plan_timeout_seconds=30)
    return make


@pytest.fixture
async def engines(bot_sessionmaker: async_sessionmaker[AsyncSession]
                  ) -> AsyncIterator[Callable[..., Engine]]:
    made: list[Engine] = []

    def make(settings: Settings, replica: str, rotate: Step | None = None) -> Engine:
        steps: dict[StepName, Step] = {**default_steps(),
                                       **{n: ScriptedStep(n) for n in (*BEFORE_KEYS, S.VERIFY)}}
        if rotate is not None:
            steps[S.ROTATE_KEYS] = rotate
        engine = Engine(bot_sessionmaker, settings, steps, replica_id=replica)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.shutdown()


async def step_view(engine: Engine, run_id: str, step: StepName) -> Any:
    return next(s for s in (await engine.run_view(run_id)).steps if s.step is step)


async def recovered(engine: Engine, run_id: str, step: StepName) -> Any:
    """`engine` starts watching leases; the step a dead replica left running, once examined."""
    changed = asyncio.Event()
    engine.subscribe(lambda _run: changed.set())
    await engine.recover(watch=True)
    async with asyncio.timeout(60):
        while (await step_view(engine, run_id, step)).status is StepStatus.RUNNING:
            await changed.wait()
            changed.clear()
    return await step_view(engine, run_id, step)


async def approve(engine: Engine, run_id: str, *steps: StepName) -> None:
    for step in steps:
        await approve_twice(engine, run_id, step)
        status = (await step_view(engine, run_id, step)).status
        assert status in (StepStatus.SUCCEEDED, StepStatus.ALREADY_DONE,
                          StepStatus.FAILED), (step, status)


async def new_run_continues(engine: Engine, first: str, keyed: int, mailed: int) -> str:
    """A new run up to its end; its plans for steps 4 and 5 say whose rotation they continue."""
    run_id = await start(engine)
    await approve(engine, run_id, *BEFORE_KEYS)
    line = f"continuing the rotation of run {first[:8]}: {keyed} clients keyed, {mailed} mailed"
    plan4 = (await step_view(engine, run_id, S.ROTATE_KEYS)).plan
    assert line in plan4.summary and plan4.details[0] == line
    await approve(engine, run_id, S.ROTATE_KEYS)
    plan5 = (await step_view(engine, run_id, S.EMAIL_CLIENTS)).plan
    assert plan5.details[0] == line
    await approve(engine, run_id, S.EMAIL_CLIENTS, S.VERIFY)
    assert (await engine.run_view(run_id)).status is RunStatus.COMPLETED
    return run_id


async def assert_rotation_over(url: str, sessions: async_sessionmaker[AsyncSession],
                               before: dict[Any, Any], rotation: str, directory: Path,
                               smtp: SmtpServer) -> None:
    """One key per client on all its rows, under the first run's rotation; each contact mailed
    once, with its key; no work table; the rotation closed, so no later run continues it."""
    mapping = await SqlRotationLedger(sessions).mapping(rotation)
    clients = keys_by_old_hash(before, await owned_rows(url))
    assert_one_key_per_client(clients, mapping)
    for email, old_hash in contacts_of(directory).items():
        received = smtp.to(email)
        assert len(received) == 1, f"{email} got {len(received)} emails"
        ((_, key),) = clients[old_hash]
        assert key is not None and key in received[0].get_content()
    assert await work_tables(url) == [], "no rollback_bot.rotation_* table is left"
    async with sessions() as session:
        assert await repo_rotations.is_closed(session, rotation)
        assert await repo_rotations.open_rotation_before(session, rotation, "default") is None


async def test_abort_after_a_crash_mid_step_4_then_a_new_run_finishes_the_same_rotation(
    phase2_target_url: str, tmp_path: Path, sandbox_seed: SandboxSeed, smtp_server: SmtpServer,
    settings_for_run: Callable[..., Settings], engines: Callable[..., Engine],
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await add_padded_clients(phase2_target_url, clients=PADDED)  # over many pages
    directory = with_padded_contacts(sandbox_seed.directory_csv, tmp_path)
    settings = settings_for_run(directory)
    before = await owned_rows(phase2_target_url)
    first = engines(settings, "replica-a", DiesMidway(default_steps()[S.ROTATE_KEYS], 3))
    run1 = await start(first)
    await approve(first, run1, *BEFORE_KEYS)
    await approve_twice(first, run1, S.ROTATE_KEYS)  # the bot dies in its third batch
    split = [old for old, found in keys_by_old_hash(
        before, await owned_rows(phase2_target_url)).items() if len(found) > 1]
    assert split, "some client has rows re-keyed and rows not"
    await first.shutdown()

    second = engines(settings, "replica-b")
    interrupted = await recovered(second, run1, S.ROTATE_KEYS)  # step 4's check: not in place
    assert interrupted.status is StepStatus.INTERRUPTED
    answer = await second.abort(Click(BOB, run1, interrupted.execution_id), "start again")
    assert answer.accepted
    assert "12 clients keyed (" in answer.message and "0 mailed, 12 not mailed" in answer.message
    assert f"The work table {work_table(run1)} (new keys in plaintext) is still in the " \
           "target." in answer.message
    assert "A new run continues this rotation" in answer.message
    view = await second.run_view(run1)
    assert view.left_behind and all(line in answer.message for line in view.left_behind)
    _, blocks = step_message(view, await step_view(second, run1, S.ROTATE_KEYS),
                             datetime.now(UTC))
    assert "A new run continues this rotation" in str(blocks), "the thread says so"
    assert any("still in the target" in line for line in status_board(view))

    await new_run_continues(second, run1, keyed=12, mailed=0)
    await assert_rotation_over(phase2_target_url, bot_sessionmaker, before, run1, directory,
                               smtp_server)


async def test_reject_after_step_4_finished_then_a_new_run_mails_everyone_once(
    phase2_target_url: str, sandbox_seed: SandboxSeed, smtp_server: SmtpServer,
    settings_for_run: Callable[..., Settings], engines: Callable[..., Engine],
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    engine = engines(settings_for_run(), "replica-a")
    before = await owned_rows(phase2_target_url)
    run1 = await start(engine)
    await approve(engine, run1, *BEFORE_KEYS, S.ROTATE_KEYS)
    assert await work_tables(phase2_target_url) == [], "dropped at the end of step 4"
    answer = await engine.reject(await waiting_click(engine, run1, S.EMAIL_CLIENTS, BOB),
                                 "wrong template")
    assert answer.accepted
    assert "6 clients keyed, 0 mailed, 6 not mailed" in answer.message
    assert "No work table is left in the target." in answer.message
    assert "their old keys are already dead" in answer.message
    assert not smtp_server.messages
    dry = {plan.step: plan for plan in await engine.dry_run()}  # `/rollback-phase3 plan`
    line = f"continuing the rotation of run {run1[:8]}: 6 clients keyed, 0 mailed"
    assert line in dry[S.ROTATE_KEYS].summary and dry[S.EMAIL_CLIENTS].details[0] == line

    run2 = await new_run_continues(engine, run1, keyed=6, mailed=0)
    step4 = await step_view(engine, run2, S.ROTATE_KEYS)
    assert step4.summary and "already done" in step4.summary, "no second key for anyone"
    await assert_rotation_over(phase2_target_url, bot_sessionmaker, before, run1,
                               sandbox_seed.directory_csv, smtp_server)


async def test_abort_after_step_5_partly_sent_then_a_new_run_mails_only_the_rest(
    phase2_target_url: str, sandbox_seed: SandboxSeed, smtp_server: SmtpServer,
    settings_for_run: Callable[..., Settings], engines: Callable[..., Engine],
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    refusing = next(c for c in sandbox_seed.result.clients if c.has_contact)
    smtp_server.fail_permanent(refusing.email)
    engine = engines(settings_for_run(), "replica-a")
    before = await owned_rows(phase2_target_url)
    run1 = await start(engine)
    await approve(engine, run1, *BEFORE_KEYS, S.ROTATE_KEYS, S.EMAIL_CLIENTS)
    failed = await step_view(engine, run1, S.EMAIL_CLIENTS)
    assert failed.status is StepStatus.FAILED and len(smtp_server.messages) == 4
    answer = await engine.abort(Click(CAROL, run1, failed.execution_id), "mailbox full")
    assert answer.accepted
    assert "6 clients keyed, 4 mailed, 1 not mailed, 1 without a contact" in answer.message

    smtp_server.handler.permanent.clear()  # the mailbox is fixed
    await new_run_continues(engine, run1, keyed=6, mailed=4)
    assert len(smtp_server.messages) == 5
    await assert_rotation_over(phase2_target_url, bot_sessionmaker, before, run1,
                               sandbox_seed.directory_csv, smtp_server)


async def test_a_run_after_a_closed_rotation_says_who_mailed_everyone_and_mails_nobody(
    phase2_target_url: str, smtp_server: SmtpServer,
    settings_for_run: Callable[..., Settings], engines: Callable[..., Engine],
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    engine = engines(settings_for_run(), "replica-a")
    run1 = await start(engine)
    await approve(engine, run1, *BEFORE_KEYS, S.ROTATE_KEYS, S.EMAIL_CLIENTS, S.VERIFY)
    assert (await engine.run_view(run1)).status is RunStatus.COMPLETED
    assert len(smtp_server.messages) == 5
    async with bot_sessionmaker() as session:
        closed = await repo_rotations.last_closed(session)
    assert closed is not None and closed.rotation_id == run1
    when = f"{closed.closed_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    line = (f"every client was already keyed and mailed by the rotation of run {run1[:8]} "
            f"(closed at {when}, 6 keyed, 5 mailed, 1 without a contact); nothing is left "
            "to mail")
    dry = {plan.step: plan for plan in await engine.dry_run()}  # `/rollback-phase3 plan`
    assert dry[S.EMAIL_CLIENTS].summary == line

    run2 = await start(engine)
    await approve(engine, run2, *BEFORE_KEYS, S.ROTATE_KEYS)
    step4 = await step_view(engine, run2, S.ROTATE_KEYS)
    assert step4.status is StepStatus.ALREADY_DONE and step4.summary is not None
    assert step4.summary == (f"already done: every owned row (24) already holds the key the "
                             f"rotation of run {run1[:8]} gave it (closed at {when})"), \
        "its own rotation keys nobody, and it says whose keys the rows hold"
    plan5 = (await step_view(engine, run2, S.EMAIL_CLIENTS)).plan
    assert plan5 is not None and plan5.summary == line and plan5.details[0] == line
    assert "run step 4 first" not in str(plan5)
    await approve(engine, run2, S.EMAIL_CLIENTS)
    step5 = await step_view(engine, run2, S.EMAIL_CLIENTS)
    assert step5.status is StepStatus.ALREADY_DONE, step5.summary
    assert step5.summary == f"already done: {line}"
    assert len(smtp_server.messages) == 5, "nobody is mailed a second time"
    await approve(engine, run2, S.VERIFY)
    assert (await engine.run_view(run2)).status is RunStatus.COMPLETED

    # run2 closed its own, empty rotation: the next plan still names the one that mailed.
    dry = {plan.step: plan for plan in await engine.dry_run()}
    assert dry[S.EMAIL_CLIENTS].summary == line
    # After a new Phase 3 and its downgrade, every client waits for a key again: mail them.
    conn = await asyncpg.connect(libpq_url(phase2_target_url))
    try:
        for table in ("sessions", "assistants"):
            await conn.execute(f"UPDATE {table} SET owner_api_key = NULL")
    finally:
        await conn.close()
    dry = {plan.step: plan for plan in await engine.dry_run()}
    assert "already keyed" not in dry[S.EMAIL_CLIENTS].summary
    assert dry[S.EMAIL_CLIENTS].summary.startswith("email ")


async def test_with_no_rotation_ever_and_nothing_keyed_step_5_says_run_step_4_first(
    smtp_server: SmtpServer, settings_for_run: Callable[..., Settings],
    engines: Callable[..., Engine],
) -> None:
    engine = engines(settings_for_run(), "replica-a", ScriptedStep(S.ROTATE_KEYS))
    run_id = await start(engine)
    await approve(engine, run_id, *BEFORE_KEYS, S.ROTATE_KEYS, S.EMAIL_CLIENTS)
    step5 = await step_view(engine, run_id, S.EMAIL_CLIENTS)
    assert step5.status is StepStatus.FAILED
    assert step5.summary == "the rotation ledger is empty: run step 4 first"
    assert not smtp_server.messages
