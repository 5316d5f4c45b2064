"""SIGKILL of a real bot process while backup, restart, key rotation or verification runs.

Each step is held mid-way (a table lock its SQL must wait for, or a slow restore command), the
bot is killed, the hold released, a new process started: the step is interrupted, Retry with two
fresh approvals completes it, and what must be true afterwards is.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from bot.slack.actions import ActionId
from bot.urls import libpq_url
from tests.crash.bot_process import Bot, approve_step, start_run, step_message
from tests.crash.sandbox_env import sandbox_env
from tests.fixtures.sandbox import SandboxApi, SandboxSeed
from tests.slack.harness import message_text
from tests.slackwire.fake_web_api import FakeSlack

pytestmark = pytest.mark.docker

STEPS = {"backup": 1, "restart": 3, "rotate_keys": 4, "verify": 6}


@pytest.mark.parametrize("step", list(STEPS))
async def test_sigkill_mid_step_then_retry_completes_it(
    step: str, bots: list[Bot], fake_slack: FakeSlack, bot_db_url: str,
    sandbox_api: SandboxApi, sandbox_seed: SandboxSeed, tmp_path: Path,
) -> None:
    number = STEPS[step]
    restore = "git checkout -q phase-2"
    env = sandbox_env(fake_slack, bot_db_url, sandbox_api, sandbox_seed, tmp_path,
                      MAILER="outbox", OUTBOX_DIR=str(tmp_path / "outbox"))
    if step == "restart":
        env["CODE_RESTORE_COMMAND"] = f"sh -c 'sleep 60; {restore}'"
    log = tmp_path / "bot.log"
    first = Bot(env, log)
    bots.append(first)
    await first.ready()
    await start_run(first)
    for earlier in range(1, number):
        message = await approve_step(first, fake_slack, earlier)
        await fake_slack.wait_for(lambda m=message: "succeeded" in m.text, within=60)

    holder = await asyncpg.connect(libpq_url(sandbox_api.database_url))
    hold = holder.transaction()
    await hold.start()
    if step == "rotate_keys":  # a row lock: the plan's counts still read, the UPDATE waits
        await holder.execute("SELECT 1 FROM sessions ORDER BY id LIMIT 1 FOR UPDATE")
    elif step != "restart":  # pg_dump and the key sample wait on this
        await holder.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
    message = await approve_step(first, fake_slack, number)
    await fake_slack.wait_for(lambda: "running" in message.text, within=30)
    first.kill()
    await hold.rollback()
    await holder.close()

    second = Bot({**env, "CODE_RESTORE_COMMAND": restore}, log)
    bots.append(second)
    await second.ready()
    interrupted = await step_message(fake_slack, number, ActionId.RETRY)
    assert "interrupted" in interrupted.text
    await second.click("U_BOB", ActionId.RETRY, interrupted)
    retry = await approve_step(second, fake_slack, number)
    await fake_slack.wait_for(lambda: "succeeded" in retry.text, within=60)

    conn = await asyncpg.connect(libpq_url(sandbox_api.database_url))
    try:
        if step == "backup":
            dumps = list((tmp_path / "backups").glob("backup_before_rollback_*.dump"))
            assert len(dumps) == 1, "one verified dump; the killed one never looks complete"
        if step == "rotate_keys":
            rows = await conn.fetch("SELECT owner_api_key_hash h, owner_api_key k FROM sessions "
                                    "UNION ALL SELECT owner_api_key_hash, owner_api_key "
                                    "FROM assistants")
            assert all(r["k"] and hashlib.sha256(r["k"].encode()).hexdigest() == r["h"]
                       for r in rows)
            assert len({r["k"] for r in rows}) == len(sandbox_seed.result.clients)
        if step == "restart":
            async with aiohttp.ClientSession() as http, \
                    http.get(f"{sandbox_api.base_url}/health") as answer:
                assert (await answer.json())["phase"] == 2, "the api runs Phase 2 code"
        if step == "verify":
            assert "new keys work" in message_text(retry)
    finally:
        await conn.close()
