"""SIGKILL of a real `rollback-bot serve` while the downgrade runs; then a new process.

What must hold: the downgrade's child dies with the bot, the new process marks the step
interrupted (its effect is not in place), Retry needs two fresh approvals, and the target is
downgraded exactly once.
"""

from __future__ import annotations

from pathlib import Path

from bot.slack.actions import ActionId
from tests.crash.bot_process import Bot, approve_step, base_env, revision, start_run, step_message
from tests.slackwire.fake_web_api import FakeSlack
from tests.steps.sandbox_settings import ALEMBIC, SANDBOX_DIR


async def test_sigkill_during_downgrade_then_retry_downgrades_once(
    bots: list[Bot], fake_slack: FakeSlack, bot_db_url: str, target_db_url: str, tmp_path: Path,
) -> None:
    env = {**base_env(fake_slack, bot_db_url, target_db_url, tmp_path),
           "DOWNGRADE_WORKDIR": str(SANDBOX_DIR),
           "DOWNGRADE_COMMAND": f"sh -c 'echo $$ > {tmp_path}/child.pid; sleep 60; "
                                f"exec {ALEMBIC} downgrade 20260201_000006'"}
    log = tmp_path / "bot.log"
    first = Bot(env, log)
    bots.append(first)
    await first.ready()
    await start_run(first)
    for number in (1, 2):
        await approve_step(first, fake_slack, number)
    pidfile = tmp_path / "child.pid"
    await fake_slack.wait_for(pidfile.exists, within=30)  # the downgrade is running
    child = int(pidfile.read_text())
    first.kill()
    await fake_slack.wait_for(lambda: not Path(f"/proc/{child}").exists()
                              or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2],
                              within=10)
    assert await revision(target_db_url) == "9ddfdd63af30", "nothing was downgraded"

    fast = {**env, "DOWNGRADE_COMMAND": f"{ALEMBIC} downgrade 20260201_000006"}
    second = Bot(fast, log)
    bots.append(second)
    await second.ready()
    interrupted = await step_message(fake_slack, 2, ActionId.RETRY)
    assert "interrupted" in interrupted.text
    await second.click("U_BOB", ActionId.RETRY, interrupted)
    retry = await step_message(fake_slack, 2, ActionId.APPROVE)
    assert retry.ts != interrupted.ts
    await second.click("U_BOB", ActionId.APPROVE, retry)
    assert await revision(target_db_url) == "9ddfdd63af30", "one approval must not run it"
    await second.click("U_CAROL", ActionId.APPROVE, retry)
    await fake_slack.wait_for(lambda: "succeeded" in retry.text, within=60)
    assert await revision(target_db_url) == "20260201_000006"
