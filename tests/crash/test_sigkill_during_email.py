"""SIGKILL of a real `rollback-bot serve` in the middle of the email step; then a new process.

What must hold: no client is emailed twice. The one whose email was in flight is reported as
uncertain, not re-sent; everyone else gets exactly one email.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.slack.actions import ActionId
from tests.crash.bot_process import Bot, approve_step, start_run, step_message
from tests.crash.sandbox_env import sandbox_env
from tests.fixtures.sandbox import SandboxApi, SandboxSeed
from tests.fixtures.smtp import SmtpServer
from tests.slack.harness import message_text
from tests.slackwire.fake_web_api import FakeSlack

pytestmark = pytest.mark.docker


async def test_sigkill_during_email_never_emails_anyone_twice(
    bots: list[Bot], fake_slack: FakeSlack, bot_db_url: str, sandbox_api: SandboxApi,
    sandbox_seed: SandboxSeed, smtp_server: SmtpServer, tmp_path: Path,
) -> None:
    env = sandbox_env(fake_slack, bot_db_url, sandbox_api, sandbox_seed, tmp_path,
                      MAILER="smtp", SMTP_HOST=smtp_server.host, SMTP_PORT=str(smtp_server.port))
    contacts = [c for c in sandbox_seed.result.clients if c.has_contact]
    in_flight = contacts[2]
    smtp_server.stall(in_flight.email)
    log = tmp_path / "bot.log"
    first = Bot(env, log)
    bots.append(first)
    await first.ready()
    await start_run(first)
    for number in range(1, 5):
        message = await approve_step(first, fake_slack, number)
        await fake_slack.wait_for(lambda m=message: "succeeded" in m.text, within=60)
    await approve_step(first, fake_slack, 5)
    await fake_slack.wait_for(lambda: len(smtp_server.messages) == len(contacts) - 1
                              and in_flight.email in smtp_server.handler.stalling, within=60)
    first.kill()

    second = Bot(env, log)
    bots.append(second)
    await second.ready()
    interrupted = await step_message(fake_slack, 5, ActionId.RETRY)
    assert "interrupted" in interrupted.text
    await second.click("U_BOB", ActionId.RETRY, interrupted)
    retry = await approve_step(second, fake_slack, 5)
    await fake_slack.wait_for(lambda: "succeeded" in retry.text, within=60)
    assert in_flight.key_hash[:8] in message_text(retry), "the in-flight client is named"
    assert "uncertain" in message_text(retry)
    for client in contacts:
        expected = 0 if client is in_flight else 1
        assert len(smtp_server.to(client.email)) == expected, client.email
