"""SIGTERM in the middle of a 100-concurrent burst of clicks: `serve` exits in time, cleanly,
and every click it acknowledged is processed exactly once — by itself before it exits, or,
handed over through the inbox, by the replica that replaces it.

What a rolling deploy during an incident does: the old process is told to stop while the
channel is busy. Each click here is an Approve on the live step by someone who may not approve,
so processing it writes one `refused` entry in the incident log under that person: one entry
per acknowledged click is "exactly once", and the one real approval in the burst counts once.
Slack is slow meanwhile (replies by `response_url` go unanswered until the first bot is gone),
so the acked work cannot all be finished before the deadline: the rest must be handed over.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from bot.slack.actions import ActionId
from tests.crash.bot_process import Bot, base_env, start_run, step_message
from tests.crash.burst import Burst, fetch, inbox_unprocessed, refusals_by_actor
from tests.slack.harness import CHANNEL, button_value
from tests.slackwire.fake_web_api import FakeSlack, Message
from tests.slackwire.requests import block_actions

CLICKS = 300
CONCURRENCY = 100
EXIT_BOUND = 25  # a safety bound, far above SHUTDOWN_SECONDS: the point is that it exits
UNCLEAN = ("was never awaited", "Task was destroyed but it is pending", "Traceback")


def clicker(n: int) -> str:
    return "U_BOB" if n == 7 else f"U_LOAD{n:03d}"


def clicks(step: Message) -> list[bytes]:
    value = button_value(step, ActionId.APPROVE) or ""
    return [block_actions(clicker(n), ActionId.APPROVE.value, value, CHANNEL, step.ts,
                          step.thread_ts) for n in range(CLICKS)]


def unclean_lines(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines()
            if any(word in line for word in UNCLEAN)]


async def until_inbox_empty(bot_db_url: str, within: float = 90) -> None:
    """A click cut short mid-way is claimed for PLAN_TIMEOUT + 10 s before it is taken again."""
    for _ in range(int(within / 0.2)):
        if await inbox_unprocessed(bot_db_url) == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{await inbox_unprocessed(bot_db_url)} clicks never processed")


async def test_sigterm_mid_burst_exits_cleanly_and_every_acked_click_is_done_once(
    bots: list[Bot], fake_slack: FakeSlack, bot_db_url: str, target_db_url: str, tmp_path: Path,
) -> None:
    env = base_env(fake_slack, bot_db_url, target_db_url, tmp_path)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = Bot(env, first_log)
    bots.append(first)
    await first.ready()
    await start_run(first)
    step = await step_message(fake_slack, 1, ActionId.APPROVE)

    slack_slow = fake_slack.hold("response_url")
    burst = Burst(f"{first.url}/slack/events", clicks(step), CONCURRENCY,
                  signal_after=CLICKS // 3)
    sending = asyncio.create_task(burst.run())
    await burst.answered.wait()
    first.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(first.process.wait, EXIT_BOUND)
    await sending
    slack_slow.set()
    assert code == 0
    text = first_log.read_text(errors="replace")
    assert "SIGTERM: stopping" in text
    assert unclean_lines(first_log) == []
    acked = burst.acked()
    assert len(acked) >= CLICKS // 3, "the burst was mid-way when the bot was stopped"
    assert set(burst.answers) <= {200, None}, "an answer is OK or none at all"

    second = Bot(env, second_log)
    bots.append(second)
    await second.ready()
    await until_inbox_empty(bot_db_url)
    refused = await refusals_by_actor(bot_db_url)
    wrong = {clicker(n): refused.get(clicker(n)) for n in acked
             if clicker(n) != "U_BOB" and refused.get(clicker(n)) != 1}
    assert wrong == {}, "acked clicks processed other than once"
    # An unanswered request may have been written before the bot stopped: at most once too.
    assert max(refused.values()) == 1
    approvals = await fetch(bot_db_url, "SELECT user_id FROM approvals")
    assert [r["user_id"] for r in approvals] == (["U_BOB"] if 7 in acked else [])
    rows = await fetch(bot_db_url, "SELECT count(*) AS n FROM engine_inbox")
    assert rows[0]["n"] >= len(acked), "every acked click has its inbox row"
    assert unclean_lines(second_log) == []
