"""A downgrade command that prints its whole environment and the target's URL, then fails: no
secret reaches a Slack call, a log record, a row of the bot's database or the timeline."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_events
from bot.domain.states import StepStatus
from bot.domain.step_protocol import Step
from bot.domain.steps import StepName
from bot.domain.timeline import timeline_markdown
from bot.engine.engine import Click
from bot.urls import with_database
from steps.downgrade import DowngradeStep
from tests.engine.fake_steps import scripted_steps
from tests.engine.test_engine_flow import BOB, CAROL, approve_twice, start, waiting_click
from tests.slack.harness import SECRET, running_bot
from tests.slackwire.fake_web_api import FakeSlack
from tests.steps.sandbox_settings import SANDBOX_DIR

BOT_TOKEN = "xoxb-test-token"
SMTP_SECRET = "smtp-Secret-2718"
TARGET_SECRET = "tgt-Secret-3141"
BOT_DB_SECRET = "botdb-Secret-1618"
API_KEY_SECRET = "api-Secret-5772"
NEW_KEY = "6f1c2d4e-8a3b-4c5d-9e7f-0a1b2c3d4e5f"  # the shape of a key step 4 makes (uuid4)
SECRETS = (BOT_TOKEN, SECRET, SMTP_SECRET, TARGET_SECRET, BOT_DB_SECRET, API_KEY_SECRET, NEW_KEY)


def with_password(url: str, password: str) -> str:
    """The same database, now named with a password (the test server trusts any)."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user.split(':')[0]}:{password}@{host}"


def leaked(where: str) -> list[str]:
    return [secret[:6] + "…" for secret in SECRETS if secret in where]


async def bot_rows(sessions: async_sessionmaker[AsyncSession]) -> str:
    async with sessions() as session:
        tables = (await session.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars().all()
        rows = []
        for table in tables:
            rows += (await session.execute(
                text(f'SELECT row_to_json(t)::text FROM "{table}" t'))).scalars().all()
    return "\n".join(rows)


async def test_a_failing_command_that_prints_every_secret_leaks_none(
    fake_slack: FakeSlack, bot_sessionmaker: async_sessionmaker[AsyncSession],
    target_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What a bot process carries in its environment, which a child would inherit.
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_SECRET)
    bot_db = with_password(with_database(target_db_url, "rollback_bot"), BOT_DB_SECRET)
    monkeypatch.setenv("DATABASE_URL", bot_db)
    target = with_password(target_db_url, TARGET_SECRET)
    command = (f"sh -c 'env; echo \"target: $DATABASE_URL\"; echo \"made key {NEW_KEY}\";"
               " echo \"api key was $API_KEY\"; exit 1'")
    steps: dict[StepName, Step] = {**scripted_steps(), StepName.DOWNGRADE: DowngradeStep()}
    caplog.set_level(logging.DEBUG)
    async with running_bot(
        fake_slack, bot_sessionmaker, steps, target_database_url=target,
        database_url=bot_db, smtp_password=SMTP_SECRET, downgrade_command=command,
        downgrade_workdir=SANDBOX_DIR,
        downgrade_env=json.dumps({"API_KEY": API_KEY_SECRET, "DEBUG": "true"}),
    ) as bot:
        run_id = await start(bot.engine)
        await approve_twice(bot.engine, run_id, StepName.BACKUP)
        for actor in (BOB, CAROL):
            click: Click = await waiting_click(bot.engine, run_id, StepName.DOWNGRADE, actor)
            assert (await bot.engine.approve(click)).accepted
        await bot.engine.wait_idle()
        view = await bot.engine.run_view(run_id)
        downgrade = view.steps[1]
        assert downgrade.status is StepStatus.FAILED
        await fake_slack.wait_for(lambda: any(
            m.text.startswith("Step 2/6") and "ailed" in json.dumps(m.blocks)
            for m in fake_slack.messages.values()))
        async with bot_sessionmaker() as session:
            events = await repo_events.all_events(session, run_id)
            output = await repo_events.all_output(session, run_id, downgrade.execution_id or "")
    assert "API_KEY=***" in output and any("target: postgresql" in line for line in output), \
        "the command did print them: masked"
    assert any("made key ***" in line for line in output)
    assert not leaked(json.dumps([c.args for c in fake_slack.calls], default=str)), "Slack"
    assert not leaked(caplog.text), "the bot's log"
    assert not leaked(await bot_rows(bot_sessionmaker)), "the bot's database"
    assert not leaked(timeline_markdown(view, events)), "the timeline"
    assert not leaked(downgrade.summary or "") and "***" in (downgrade.summary or "")
