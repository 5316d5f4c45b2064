"""The whole runbook through Slack on the sandbox: real Postgres, Docker, SMTP and HTTP.

Every Web API call the bot makes is recorded by the fake Slack and scanned for the new keys.
"""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.slack.actions import ActionId
from bot.urls import libpq_url
from steps.registry import default_steps
from tests.fixtures.sandbox import ModelSandbox, SandboxApi, SandboxSeed
from tests.fixtures.smtp import SmtpServer
from tests.sandbox.after_rollback import assert_rolled_back
from tests.slack.harness import button_of, message_text, running_bot
from tests.slack.test_slack_front import approve, start_rollback
from tests.slackwire.fake_web_api import FakeSlack
from tests.steps.sandbox_settings import ALEMBIC, SANDBOX_DIR
from tests.steps.step_context import settings_for

pytestmark = pytest.mark.docker


async def test_full_rollback_through_slack_on_the_sandbox(
    fake_slack: FakeSlack, bot_sessionmaker: async_sessionmaker[AsyncSession],
    bot_db_url: str, sandbox_api: SandboxApi, sandbox_seed: SandboxSeed,
    smtp_server: SmtpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_bot(
        fake_slack, bot_sessionmaker, default_steps(),
        database_url=bot_db_url, target_database_url=sandbox_api.database_url,
        backup_dir=tmp_path / "backups", downgrade_command=f"{ALEMBIC} downgrade 20260201_000006",
        downgrade_workdir=SANDBOX_DIR, code_restore_command="git checkout -q phase-2",
        code_restore_workdir=sandbox_api.code_dir, api_compose_project=sandbox_api.project,
        api_base_url=sandbox_api.base_url, health_timeout_seconds=30, mailer="smtp",
        smtp_host=smtp_server.host, smtp_port=smtp_server.port,
        client_directory=sandbox_seed.directory_csv,
    ) as bot:
        root = await start_rollback(bot, "Phase 3 hashing broke auth for every client")
        for number in range(1, 7):
            message = await approve(bot, number, "U_BOB", "U_CAROL")
            done = await bot.fake.wait_for(
                lambda m=message: any(w in m.text for w in ("succeeded", "failed")),
                within=120)
            assert "succeeded" in message.text, message_text(message)
            assert done
        await bot.fake.wait_for(lambda: any(u.get("title") == "Incident timeline (picture)"
                                            for u in bot.fake.uploads.values()), within=60)
        thread = message_text(root) + "".join(
            message_text(m) for m in bot.fake.thread(root.channel, root.ts))
        assert "backup_before_rollback_" in thread and "sha256" in thread
        assert "9ddfdd63af30 -> 20260201_000006" in thread
        assert f"{sandbox_api.project}-api-1" in thread
        assert "6 clients re-keyed" in thread and "5 emails sent" in thread
        assert "5/5 new keys work" in thread
        assert button_of(bot.fake.thread(root.channel, root.ts)[0], ActionId.APPROVE) is None

    conn = await asyncpg.connect(libpq_url(sandbox_api.database_url))
    try:
        keys = {r[0] for r in await conn.fetch(
            "SELECT owner_api_key FROM sessions UNION SELECT owner_api_key FROM assistants")}
        per_client = await conn.fetchval(
            "SELECT max(n) FROM (SELECT count(DISTINCT owner_api_key) n FROM (SELECT "
            "owner_api_key_hash h, owner_api_key FROM sessions UNION ALL SELECT "
            "owner_api_key_hash, owner_api_key FROM assistants) t GROUP BY h) c")
    finally:
        await conn.close()
    assert len(keys) == 6 and None not in keys and per_client == 1
    bot_conn = await asyncpg.connect(libpq_url(bot_db_url))
    try:
        rows = []
        for table in ("rollback_runs", "step_executions", "approvals", "incident_events",
                      "notifications", "key_rotations", "slack_outbox"):
            rows += await bot_conn.fetch(f"SELECT * FROM {table}")
        dump = " ".join(str(tuple(r)) for r in rows)
    finally:
        await bot_conn.close()
    slack_text = bot.fake.all_text()
    # Everything logged in this process except the test's own SMTP server (aiosmtpd logs the
    # DATA it receives as 'mail.log': that is the client's mailbox, where the key belongs).
    bot_logs = "\n".join(r.getMessage() for r in caplog.records if r.name != "mail.log")
    for key in keys:
        assert key not in slack_text, "a new key reached Slack"
        assert key not in bot_logs, "a new key reached the bot's logs"
        assert key not in dump, "a new key reached the bot's database"
    for client in sandbox_seed.result.clients:
        received = smtp_server.to(client.email)
        assert len(received) == (1 if client.has_contact else 0)


async def test_full_rollback_through_slack_in_either_key_model_leaves_nothing_stale(
    fake_slack: FakeSlack, bot_sessionmaker: async_sessionmaker[AsyncSession],
    bot_db_url: str, model_sandbox: ModelSandbox, smtp_server: SmtpServer, tmp_path: Path,
) -> None:
    """Both models of the service, its Redis cache warm: after the six steps the new key(s)
    pass the door and see every row, old keys are refused, no cache entry holds an old hash,
    every contact got the key that works once — and in `service` mode that is one door key,
    installed in the service's env file before anyone was mailed."""
    box = model_sandbox
    service = box.key_model == "service"
    async with running_bot(
        fake_slack, bot_sessionmaker, default_steps(),
        database_url=bot_db_url, target_database_url=box.api.database_url,
        backup_dir=tmp_path / "backups", downgrade_command=f"{ALEMBIC} downgrade 20260201_000006",
        downgrade_workdir=SANDBOX_DIR, code_restore_command="git checkout -q phase-2",
        code_restore_workdir=box.api.code_dir, api_compose_project=box.api.project,
        api_base_url=box.api.base_url, health_timeout_seconds=30, mailer="smtp",
        smtp_host=smtp_server.host, smtp_port=smtp_server.port,
        client_directory=box.directory_csv, **box.settings(),
    ) as bot:
        root = await start_rollback(bot, "Phase 3 hashing broke auth for every client")
        for number in range(1, 7):
            message = await approve(bot, number, "U_BOB", "U_CAROL")
            await bot.fake.wait_for(
                lambda m=message: any(w in m.text for w in ("succeeded", "failed")),
                within=120)
            assert "succeeded" in message.text, message_text(message)
        thread = message_text(root) + "".join(
            message_text(m) for m in bot.fake.thread(root.channel, root.ts))
        clients = 1 if service else 6
        assert f"{clients} clients re-keyed" in thread and "5 emails sent" in thread
        sampled = min(clients, 5)  # VERIFY_SAMPLE_SIZE
        assert f"{sampled}/{sampled} new keys work" in thread
        assert "cached sessions removed" in thread
        if service:
            assert "KEY_MODEL=service" in thread and "new door key" in thread
            assert str(box.env_file) in thread
        slack_text = bot.fake.all_text()

    settings = settings_for(target_database_url=box.api.database_url,
                            api_base_url=box.api.base_url, **box.settings())
    contacts = [c.email for c in box.seed.clients if c.has_contact]
    keys = await assert_rolled_back(settings, {c.key for c in box.seed.clients},
                                    smtp_server.messages, contacts)
    for key in keys.by_hash.values():
        assert key not in slack_text, "a new key reached Slack"
