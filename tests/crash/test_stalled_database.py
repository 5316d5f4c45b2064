"""Two `rollback-bot serve` processes; the executing one's bot database stalls past the lease.

What must hold: the stalled process kills the step's programs before its lease can lapse; the
other process, finding the lease expired, marks the step interrupted (its effect is not in
place); when the stalled process gets its database back it overwrites nothing; the retry runs
the downgrade exactly once, and the final state is the true one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from bot.slack.actions import ActionId
from bot.urls import libpq_url
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
from tests.crash.db_proxy import PausableProxy
from tests.slackwire.fake_web_api import FakeSlack
from tests.steps.sandbox_settings import ALEMBIC, SANDBOX_DIR


@pytest.fixture
async def proxy(bot_db_url: str) -> AsyncIterator[PausableProxy]:
    proxy = PausableProxy.for_url(bot_db_url)
    await proxy.start()
    yield proxy
    await proxy.close()


async def step_endings(bot_db_url: str, step: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(libpq_url(bot_db_url))
    try:
        rows = await conn.fetch(
            "SELECT e.attempt, i.kind FROM incident_events i JOIN step_executions e"
            " ON e.id = (i.data->>'execution_id')::uuid WHERE i.step = $1 AND i.kind IN"
            " ('step_succeeded', 'step_failed', 'step_interrupted', 'step_already_done')"
            " ORDER BY i.id", step)
        return [(int(r["attempt"]), str(r["kind"])) for r in rows]
    finally:
        await conn.close()


async def test_a_stalled_replica_kills_its_step_and_the_other_decides(
    bots: list[Bot], fake_slack: FakeSlack, bot_db_url: str, target_db_url: str, tmp_path: Path,
    proxy: PausableProxy,
) -> None:
    starts, go = tmp_path / "starts", tmp_path / "go"
    env = {**base_env(fake_slack, bot_db_url, target_db_url, tmp_path),
           **held_downgrade(starts, go, SANDBOX_DIR, ALEMBIC)}
    log = tmp_path / "bot.log"
    stalled = Bot({**env, "DATABASE_URL": proxy.url_through(bot_db_url)}, log)
    other = Bot(env, log)
    bots += [stalled, other]
    await stalled.ready()
    await other.ready()
    await start_run(stalled)
    await approve_step(stalled, fake_slack, 1)
    await approve_step(stalled, fake_slack, 2)  # the clicks reach the process that will stall
    await fake_slack.wait_for(starts.exists, within=30)
    first_copy = int(starts.read_text().split()[0])
    assert group_alive(first_copy)

    proxy.pause()  # its bot database stops answering, for longer than the lease
    interrupted = await step_message(fake_slack, 2, ActionId.RETRY)  # the other's verdict
    assert "interrupted" in interrupted.text
    assert not group_alive(first_copy), "the stalled replica killed its copy before the takeover"
    assert await revision(target_db_url) == "9ddfdd63af30", "nothing was downgraded"
    proxy.resume()

    await other.click("U_BOB", ActionId.RETRY, interrupted)
    await approve_step(other, fake_slack, 2)
    await fake_slack.wait_for(lambda: len(starts.read_text().split()) == 2, within=30)
    go.touch()
    await fake_slack.wait_for(lambda: any(m.text.startswith("Step 3/6")
                                          for m in fake_slack.messages.values()), within=60)
    assert await revision(target_db_url) == "20260201_000006"
    assert await step_endings(bot_db_url, "downgrade") == [
        (1, "step_interrupted"), (2, "step_succeeded")], "the stalled replica overwrote nothing"
    assert stalled.process.poll() is None and other.process.poll() is None
    assert "fencing step execution" in log.read_text()
