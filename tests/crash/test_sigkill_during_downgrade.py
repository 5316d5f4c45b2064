"""SIGKILL of a real `rollback-bot serve` while the downgrade runs; then a new process.

What must hold: the downgrade's child dies with the bot, the new process marks the step
interrupted (its effect is not in place), Retry needs two fresh approvals, and the target is
downgraded exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from bot.db.urls import libpq_url
from bot.rehearsal.postgres import free_port
from bot.slack.actions import ActionId
from tests.slack.harness import CHANNEL, CHANNEL_NAME, SECRET, button_value
from tests.slackwire.fake_web_api import FakeSlack, Message
from tests.slackwire.requests import block_actions, sign, slash_command, view_submission
from tests.steps.sandbox_settings import ALEMBIC, SANDBOX_DIR

BIN = Path(sys.prefix) / "bin" / "rollback-bot"


class Bot:
    """One `rollback-bot serve --http` process, and the wire to it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(BIN), "serve", "--http", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            while True:
                assert self.process.poll() is None, "rollback-bot serve exited"
                try:
                    async with http.get(f"{self.url}/health") as answer:
                        if answer.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    async def post(self, body: bytes) -> int:
        async with aiohttp.ClientSession() as http, \
                http.post(f"{self.url}/slack/events", data=body,
                          headers=sign(body, SECRET)) as answer:
            return answer.status

    async def click(self, user: str, action: ActionId, message: Message) -> None:
        value = button_value(message, action)
        assert value, f"no {action} on {message.text}"
        assert await self.post(block_actions(user, action.value, value, CHANNEL, message.ts,
                                             message.thread_ts)) == 200

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def env(fake_slack: FakeSlack, bot_db_url: str, target_db_url: str, tmp_path: Path
        ) -> Iterator[dict[str, str]]:
    yield {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE"))},
        "DATABASE_URL": bot_db_url, "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": fake_slack.url,
        "ROLLBACK_CHANNEL": CHANNEL_NAME, "APPROVER_USER_IDS": "U_ALICE,U_BOB,U_CAROL",
        "SLACK_WRITE_INTERVAL_SECONDS": "0.02", "STEP_LEASE_SECONDS": "2",
        "TARGET_DATABASE_URL": target_db_url, "BACKUP_DIR": str(tmp_path / "backups"),
        "DOWNGRADE_WORKDIR": str(SANDBOX_DIR),
        "DOWNGRADE_COMMAND": f"sh -c 'echo $$ > {tmp_path}/child.pid; sleep 60; "
                            f"exec {ALEMBIC} downgrade 20260201_000006'",
    }


@pytest.fixture
async def bots() -> AsyncIterator[list[Bot]]:
    started: list[Bot] = []
    yield started
    for bot in started:
        if bot.process.poll() is None:
            bot.kill()


async def revision(url: str) -> str:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        return str(await conn.fetchval("SELECT version_num FROM alembic_version"))
    finally:
        await conn.close()


async def step_message(fake: FakeSlack, number: int, action: ActionId) -> Message:
    def find() -> Message | None:
        for message in reversed(list(fake.messages.values())):
            if message.text.startswith(f"Step {number}/6") and button_value(message, action):
                return message
        return None

    return await fake.wait_for(find, within=60)  # type: ignore[no-any-return]


async def test_sigkill_during_downgrade_then_retry_downgrades_once(
    env: dict[str, str], bots: list[Bot], fake_slack: FakeSlack, target_db_url: str,
    tmp_path: Path,
) -> None:
    log = tmp_path / "bot.log"
    first = Bot(env, log)
    bots.append(first)
    await first.ready()
    assert await first.post(slash_command("Phase 3 broke auth", "U_ALICE", CHANNEL,
                                          CHANNEL_NAME)) == 200
    values = {"reason": {"reason_input": {"type": "plain_text_input", "value": "Phase 3 broke"}},
              "lossy_ack": {"lossy_ack_input": {"type": "checkboxes", "selected_options": [
                  {"value": "lossy_acknowledged"}]}}}
    assert await first.post(view_submission("U_ALICE", "rollback_start", CHANNEL, values)) == 200
    for number in (1, 2):
        message = await step_message(fake_slack, number, ActionId.APPROVE)
        await first.click("U_BOB", ActionId.APPROVE, message)
        await first.click("U_CAROL", ActionId.APPROVE, message)
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
