"""SIGKILL of a real `rollback-bot serve` right after Slack got HTTP 200 for the second approval.

What Slack was told OK is durable: the click was in the bot's inbox before the ack, so after a
restart the step starts with no further click, and the thread shows both approvers.
"""

from __future__ import annotations

from pathlib import Path

from bot.slack.actions import ActionId
from tests.crash.bot_process import Bot, base_env, start_run, step_message
from tests.slack.harness import message_text
from tests.slackwire.fake_web_api import FakeSlack


async def test_sigkill_right_after_the_second_approvals_ack_loses_nothing(
    bots: list[Bot], fake_slack: FakeSlack, bot_db_url: str, target_db_url: str, tmp_path: Path,
) -> None:
    env = base_env(fake_slack, bot_db_url, target_db_url, tmp_path)
    log = tmp_path / "bot.log"
    first = Bot(env, log)
    bots.append(first)
    await first.ready()
    await start_run(first)
    message = await step_message(fake_slack, 1, ActionId.APPROVE)
    await first.click("U_BOB", ActionId.APPROVE, message)
    await fake_slack.wait_for(lambda: "U_BOB" in message_text(message), within=30)
    await first.click("U_CAROL", ActionId.APPROVE, message)  # returns on the HTTP 200
    first.kill()  # milliseconds later: the click's work had barely begun, if at all

    second = Bot(env, log)
    bots.append(second)
    await second.ready()  # no click is sent to this process
    await fake_slack.wait_for(lambda: "succeeded" in message.text, within=60)
    shown = message_text(message)
    assert "U_BOB" in shown and "U_CAROL" in shown, "the thread shows both approvers"
    backups = list((tmp_path / "backups").glob("*.dump"))
    assert len(backups) == 1, "the backup ran once"
