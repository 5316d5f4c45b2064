"""Two targets at once, one bot database: staging and production each roll back their own
sandbox (its own database and api, its own client directory), one engine per target, at the
same time, with the real steps 2, 4 and 5 and a real SMTP server (1, 3 and 6 scripted). One
active run per target, not one per bot; nothing is shared: each target's keys are in its own
database and ledger rows, each contact of each target is mailed once with that target's key,
and each target's rotation is its own (production's plan never continues staging's)."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.approvals import Refusal
from bot.domain.states import RunStatus
from bot.domain.step_protocol import Step
from bot.domain.steps import StepName
from bot.engine.dry_run import dry_run_text
from bot.engine.engine import Engine
from bot.urls import libpq_url
from sandbox.api import build_app
from sandbox.migrate import migrate
from steps.registry import default_steps
from tests.engine.fake_steps import ScriptedStep
from tests.engine.test_engine_flow import ALICE, start
from tests.fixtures.http import serving
from tests.fixtures.postgres import DatabaseFactory, clone
from tests.fixtures.sandbox import SandboxSeed
from tests.fixtures.smtp import SmtpServer
from tests.steps.conftest import keys_by_old_hash, owned_rows
from tests.steps.sandbox_settings import sandbox_settings
from tests.steps.test_adopt_rotation import BEFORE_KEYS, S, approve, contacts_of

STEPS_IN_ORDER = (*BEFORE_KEYS, S.ROTATE_KEYS, S.EMAIL_CLIENTS, S.VERIFY)


@dataclass
class Target:
    name: str
    url: str
    directory: Path
    engine: Engine
    before: dict[tuple[str, str], tuple[str, str | None]]


def directory_for(seed: SandboxSeed, name: str, tmp_path: Path) -> Path:
    """The seeded directory with the target's own addresses (alice@… → production.alice@…)."""
    rows = list(csv.DictReader(seed.directory_csv.open()))
    copy = tmp_path / f"{name}-clients.csv"
    with copy.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "email": f"{name}.{row['email']}"} for row in rows)
    return copy


@pytest.fixture
async def targets(
    databases: DatabaseFactory, sandbox_seed: SandboxSeed, tmp_path: Path,
    smtp_server: SmtpServer, bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[dict[str, Target]]:
    made: dict[str, Target] = {}
    async with asyncio.TaskGroup() as group:
        urls = {name: group.create_task(clone(databases, sandbox_seed.template_url, name))
                for name in ("staging", "production")}
    apis = []
    try:
        for name, task in urls.items():
            url = task.result()
            await migrate(url, "20260201_000006", down=True)  # each after its downgrade
            api = serving(build_app(phase=2, database_url=url))
            apis.append(api)
            base_url = await api.__aenter__()
            directory = directory_for(sandbox_seed, name, tmp_path)
            settings = sandbox_settings(
                url, tmp_path / name, mailer="smtp", smtp_host=smtp_server.host,
                smtp_port=smtp_server.port, client_directory=directory, api_base_url=base_url,
                rotation_batch_pages=1, rotation_max_batch_pages=1, rotation_workers=1,
                step_timeout_seconds=120, plan_timeout_seconds=30,
                rehearsal_target="" if name == "staging" else "staging").for_target(name)
            steps: dict[StepName, Step] = {
                **default_steps(),
                **{n: ScriptedStep(n) for n in (S.BACKUP, S.RESTART, S.VERIFY)}}
            made[name] = Target(name, url, directory,
                                Engine(bot_sessionmaker, settings, steps, replica_id=name),
                                await owned_rows(url))
        yield made
    finally:
        for target in made.values():
            await target.engine.shutdown()
        for api in reversed(apis):
            await api.__aexit__(None, None, None)


async def rows_by_target(url: str, table: str, run_id: str) -> set[str]:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        column = "rotation_id" if table == "closed_rotations" else "run_id"
        rows = await conn.fetch(f"SELECT DISTINCT target FROM {table} WHERE {column} = $1",
                                run_id)
        return {r["target"] for r in rows}
    finally:
        await conn.close()


async def test_staging_and_production_roll_back_at_once_and_share_nothing(
    targets: dict[str, Target], smtp_server: SmtpServer, bot_db_url: str,
) -> None:
    staging, production = targets["staging"], targets["production"]
    runs = {name: await start(t.engine) for name, t in targets.items()}
    assert await staging.engine.active_run_id() == runs["staging"]
    assert await production.engine.active_run_id() == runs["production"], \
        "a rollback on staging does not block production"
    again = await staging.engine.start_run(ALICE, "a second one on staging", "C_ONCALL")
    assert again.refusal is Refusal.ANOTHER_RUN_ACTIVE and again.run_id == runs["staging"]

    await asyncio.gather(*(approve(t.engine, runs[n], *STEPS_IN_ORDER)
                           for n, t in targets.items()))
    for name, target in targets.items():
        run_id = runs[name]
        view = await target.engine.run_view(run_id)
        assert view.status is RunStatus.COMPLETED and view.target == name
        assert view.target_label == f" on {name}"
        assert await _run_target(bot_db_url, run_id) == name
        for table in ("step_executions", "key_rotations", "notifications", "closed_rotations"):
            assert await rows_by_target(bot_db_url, table, run_id) == {name}, table
        clients = keys_by_old_hash(target.before, await owned_rows(target.url))
        assert all(len(keys) == 1 for keys in clients.values()), "one key per client"
        other = targets["production" if name == "staging" else "staging"]
        other_keys = {k for k, _ in (await owned_rows(other.url)).values()}
        for email, old_hash in contacts_of(target.directory).items():
            assert email.startswith(f"{name}.")
            received = smtp_server.to(email)
            assert len(received) == 1, f"{email} got {len(received)} emails"
            ((new_hash, key),) = clients[old_hash]
            assert key is not None and key in received[0].get_content(), \
                "mailed the key of its own target"
            assert new_hash not in other_keys, "no key of one target is in the other's rows"
    assert len(smtp_server.messages) == sum(len(contacts_of(t.directory))
                                            for t in targets.values())
    # Each target's plan reads its own closed rotation, never the other's.
    for name, target in targets.items():
        dry = {plan.step: plan for plan in await target.engine.dry_run()}
        assert f"rotation of run {runs[name][:8]}" in dry[S.EMAIL_CLIENTS].summary, name


async def _run_target(url: str, run_id: str) -> str:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        return str(await conn.fetchval("SELECT target FROM rollback_runs WHERE id = $1",
                                       run_id))
    finally:
        await conn.close()


async def sql(url: str, statement: str, *args: object) -> None:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await conn.execute(statement, *args)
    finally:
        await conn.close()


async def test_productions_plan_quotes_the_last_staging_rehearsal_and_warns_when_stale(
    targets: dict[str, Target], bot_db_url: str,
) -> None:
    staging, production = targets["staging"], targets["production"]
    text = dry_run_text(production.engine.settings, await production.engine.dry_run_report())
    assert "Dry run on target production — nothing changed:" in text
    assert "Rehearsal on staging: none recorded" in text
    assert "⚠ no rehearsal on staging in the last 14 days" in text, "it warns..."
    assert "1. Back up the database" in text, "...and still plans every step"

    rehearsal = await start(staging.engine)
    await approve(staging.engine, rehearsal, *STEPS_IN_ORDER)
    assert (await staging.engine.run_view(rehearsal)).status is RunStatus.COMPLETED
    text = dry_run_text(production.engine.settings, await production.engine.dry_run_report())
    head = f"Last rehearsal on staging: run {rehearsal[:8]} by alice, ended "
    assert head in text and "(less than an hour ago): completed" in text
    for line in ("    1. Back up the database (pg_dump -F c): succeeded, ",
                 "    2. Alembic downgrade to Phase 2: already done, ",
                 "    4. Generate one new API key per client: succeeded, ",
                 "    5. Email each client its new key: succeeded, "):
        assert line in text, line
    assert "⚠" not in text.split(head)[1].split("Paging:")[0], "same code, same migration"
    own = dry_run_text(staging.engine.settings, await staging.engine.dry_run_report())
    assert "rehearsal" not in own.lower(), "staging's own plan quotes no rehearsal"

    await sql(bot_db_url, "UPDATE rollback_runs SET finished_at = now() - interval '15 days' "
              "WHERE id = $1", rehearsal)
    await sql(production.url, "UPDATE alembic_version SET version_num = '9ddfdd63af30'")
    text = dry_run_text(production.engine.settings, await production.engine.dry_run_report())
    assert head in text and "(15 days ago)" in text
    assert "⚠ no rehearsal on staging in the last 14 days (the last ended 15 days ago)" in text
    assert ("⚠ staging was at migration revision 20260201_000006 when rehearsed; production "
            "is at 9ddfdd63af30") in text
