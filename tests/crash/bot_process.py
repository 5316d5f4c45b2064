"""A real `rollback-bot serve --http` process for crash tests, and the Slack wire to it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from bot.rehearsal.postgres import free_port
from bot.slack.actions import ActionId
from bot.urls import libpq_url
from tests.slack.harness import CHANNEL, CHANNEL_NAME, SECRET, button_value
from tests.slackwire.fake_web_api import FakeSlack, Message
from tests.slackwire.requests import block_actions, sign, slash_command, view_submission

BIN = Path(sys.prefix) / "bin" / "rollback-bot"


async def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    """Until `GET {url}/health` answers 200; fails if the process exits first."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while True:
            assert process.poll() is None, "rollback-bot serve exited"
            try:
                async with http.get(f"{url}/health") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


class Bot:
    """One `rollback-bot serve --http` process, and the wire to it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = subprocess.Popen(
            [str(BIN), "serve", "--http", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)

    async def ready(self) -> None:
        await wait_healthy(self.url, self.process)

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
async def bots() -> AsyncIterator[list[Bot]]:
    started: list[Bot] = []
    yield started
    for bot in started:
        if bot.process.poll() is None:
            bot.kill()
    # Shown only when the test failed (pytest keeps captured output for failures): what the
    # processes said is the first thing anyone needs to read a failure that load made.
    for log in dict.fromkeys(bot.log for bot in started):
        if log.exists():
            print(f"--- tail of {log} ---", *log.read_text(errors="replace").splitlines()[-80:],
                  sep="\n")


async def revision(url: str) -> str:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        return str(await conn.fetchval("SELECT version_num FROM alembic_version"))
    finally:
        await conn.close()


async def wait_for_ledger(url: str, client_hash: str, status: str, within: float = 60) -> None:
    """Until the bot's notification ledger records `status` for the client."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        async with asyncio.timeout(within):
            while True:
                now = await conn.fetchval(
                    "SELECT status FROM notifications WHERE client_hash = $1", client_hash)
                if now == status:
                    return
                await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def step_message(fake: FakeSlack, number: int, action: ActionId) -> Message:
    def find() -> Message | None:
        for message in reversed(list(fake.messages.values())):
            if message.text.startswith(f"Step {number}/6") and button_value(message, action):
                return message
        return None

    return await fake.wait_for(find, within=60)  # type: ignore[no-any-return]


def base_env(fake: FakeSlack, bot_db_url: str, target_db_url: str, tmp_path: Path
             ) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE"))},
        "DATABASE_URL": bot_db_url, "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": fake.url,
        "ROLLBACK_CHANNEL": CHANNEL_NAME, "APPROVER_USER_IDS": "U_ALICE,U_BOB,U_CAROL",
        "SLACK_WRITE_INTERVAL_SECONDS": "0.02", "STEP_LEASE_SECONDS": "2",
        "TARGET_DATABASE_URL": target_db_url, "BACKUP_DIR": str(tmp_path / "backups"),
    }


def group_alive(pgid: int) -> bool:
    """Any live (not zombie) process in the process group `pgid`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def held_downgrade(starts: Path, go: Path, sandbox_dir: Path, alembic: str) -> dict[str, str]:
    """Settings for a downgrade that appends its process group id to `starts`, then waits
    until `go` exists before it downgrades: a step that is running for as long as a test
    needs."""
    return {"DOWNGRADE_WORKDIR": str(sandbox_dir),
            "DOWNGRADE_COMMAND": f"sh -c 'echo $$ >> {starts}; while [ ! -f {go} ]; do "
                                 f"sleep 0.1; done; exec {alembic} downgrade 20260201_000006'"}


async def start_run(bot: Bot) -> None:
    assert await bot.post(slash_command("Phase 3 broke auth", "U_ALICE", CHANNEL,
                                        CHANNEL_NAME)) == 200
    values = {"reason": {"reason_input": {"type": "plain_text_input", "value": "Phase 3 broke"}},
              "lossy_ack": {"lossy_ack_input": {"type": "checkboxes", "selected_options": [
                  {"value": "lossy_acknowledged"}]}}}
    assert await bot.post(view_submission("U_ALICE", "rollback_start", CHANNEL, values)) == 200


async def approve_step(bot: Bot, fake: FakeSlack, number: int) -> Message:
    message = await step_message(fake, number, ActionId.APPROVE)
    await bot.click("U_BOB", ActionId.APPROVE, message)
    await bot.click("U_CAROL", ActionId.APPROVE, message)
    return message
