"""Two `rollback-bot serve` processes on one bot database: one executes; the other takes over.

The step runs in exactly one process (its child writes one line per start). When that process
is killed, the other — already running, watching leases — marks the step interrupted once the
lease expires, without any restart, and executes the retry itself.
"""

from __future__ import annotations

from pathlib import Path

from bot.slack.actions import ActionId
from tests.crash.bot_process import Bot, approve_step, base_env, revision, start_run, step_message
from tests.slackwire.fake_web_api import FakeSlack
from tests.steps.sandbox_settings import ALEMBIC, SANDBOX_DIR


async def test_one_executor_and_takeover_by_the_other_process(
    bots: list[Bot], fake_slack: FakeSlack, bot_db_url: str, target_db_url: str, tmp_path: Path,
) -> None:
    starts = tmp_path / "starts"
    env = {**base_env(fake_slack, bot_db_url, target_db_url, tmp_path),
           "DOWNGRADE_WORKDIR": str(SANDBOX_DIR),
           "DOWNGRADE_COMMAND": f"sh -c 'echo $$ >> {starts}; sleep 60; "
                                f"exec {ALEMBIC} downgrade 20260201_000006'"}
    log = tmp_path / "bot.log"
    executor, standby = Bot(env, log), Bot(env, log)
    bots += [executor, standby]
    await executor.ready()
    await standby.ready()
    await start_run(executor)
    await approve_step(executor, fake_slack, 1)
    await approve_step(executor, fake_slack, 2)
    await fake_slack.wait_for(starts.exists, within=30)
    executor.kill()
    interrupted = await step_message(fake_slack, 2, ActionId.RETRY)  # the standby's doing
    assert "interrupted" in interrupted.text
    assert len(starts.read_text().split()) == 1, "the step ran in one process only"
    assert standby.process.poll() is None
    await standby.click("U_BOB", ActionId.RETRY, interrupted)
    await approve_step(standby, fake_slack, 2)
    await fake_slack.wait_for(lambda: len(starts.read_text().split()) == 2, within=30)
    assert await revision(target_db_url) == "9ddfdd63af30", "still mid-step, nothing committed"
