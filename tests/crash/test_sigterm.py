"""`docker stop` sends SIGTERM: the bot stops cleanly and leaves nothing running behind it.

What must hold: the running step's programs die with the bot (they run in their own process
group, so without a handler they would outlive it, orphaned, while the next replica offers a
Retry that starts a second copy); the bot exits 0 and says why; the bot that comes next finds
the step interrupted, and Retry (two fresh approvals) runs it once.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from bot.slack.actions import ActionId
from tests.crash.bot_process import (
    Bot,
    approve_step,
    base_env,
    group_alive,
    held_downgrade,
    revision,
    start_run,
    step_message,
)
from tests.slackwire.fake_web_api import FakeSlack
from tests.steps.sandbox_settings import ALEMBIC, SANDBOX_DIR


async def exited(bot: Bot, within: float = 30) -> int:
    """The exit code, waited for with a deadline."""
    return await asyncio.to_thread(bot.process.wait, within)


async def test_sigterm_stops_the_step_with_its_programs_and_the_next_bot_offers_retry(
    bots: list[Bot], fake_slack: FakeSlack, bot_db_url: str, target_db_url: str, tmp_path: Path,
) -> None:
    starts, go = tmp_path / "starts", tmp_path / "go"
    env = {**base_env(fake_slack, bot_db_url, target_db_url, tmp_path),
           **held_downgrade(starts, go, SANDBOX_DIR, ALEMBIC)}
    log = tmp_path / "bot.log"
    first = Bot(env, log)
    bots.append(first)
    await first.ready()
    await start_run(first)
    await approve_step(first, fake_slack, 1)
    await approve_step(first, fake_slack, 2)
    await fake_slack.wait_for(starts.exists, within=30)
    copy = int(starts.read_text().split()[0])
    assert group_alive(copy)

    first.process.send_signal(signal.SIGTERM)
    assert await exited(first) == 0
    assert not group_alive(copy), "the downgrade's programs died with the bot"
    assert "SIGTERM: stopping" in log.read_text()
    assert await revision(target_db_url) == "9ddfdd63af30", "nothing was downgraded"

    second = Bot(env, log)
    bots.append(second)
    await second.ready()
    interrupted = await step_message(fake_slack, 2, ActionId.RETRY)
    assert "interrupted" in interrupted.text
    await second.click("U_BOB", ActionId.RETRY, interrupted)
    await approve_step(second, fake_slack, 2)
    await fake_slack.wait_for(lambda: len(starts.read_text().split()) == 2, within=30)
    go.touch()
    await fake_slack.wait_for(lambda: any(m.text.startswith("Step 3/6")
                                          for m in fake_slack.messages.values()), within=60)
    assert await revision(target_db_url) == "20260201_000006"
