"""A rolling restart mid-run: two replicas on one bot database, each in turn SIGTERMed (in the
middle of a burst of clicks sent to it) and replaced, while approvals keep coming to the other.

What must hold: every click a replica acknowledged is counted once (processed by it before it
exits, or handed over through the inbox to the replica that stays); every step is executed
once; no message is posted to Slack twice; and the run completes. The load balancer is the
test itself: once a replica is told to stop, approvals go to the other, as they would once its
`/ready` answered 503.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from pathlib import Path

import pytest

from bot.slack.actions import ActionId
from tests.crash.bot_process import Bot, start_run, step_message
from tests.crash.burst import Burst, fetch, inbox_unprocessed, refusals_by_actor
from tests.crash.sandbox_env import sandbox_env
from tests.crash.test_sigterm_under_load import EXIT_BOUND, unclean_lines, until_inbox_empty
from tests.fixtures.sandbox import SandboxApi, SandboxSeed
from tests.slack.harness import CHANNEL, button_value
from tests.slackwire.fake_web_api import FakeSlack, Message
from tests.slackwire.requests import block_actions

pytestmark = pytest.mark.docker

NOISE, NOISE_CONCURRENCY = 60, 20


class Replicas:
    def __init__(self, env: dict[str, str], logs: Path, fake: FakeSlack) -> None:
        self.env, self.logs, self.fake = env, logs, fake
        self.started: list[Bot] = []
        self.noise_sent: list[Burst] = []

    async def start(self, name: str) -> Bot:
        bot = Bot(self.env, self.logs / f"{name}.log")
        self.started.append(bot)
        await bot.ready()
        return bot

    async def replace(self, old: Bot, name: str, step: Message) -> Bot:
        """SIGTERM `old` a third of the way into a burst of clicks on `step` by people who may
        not approve; once it exited, start its replacement."""
        value = button_value(step, ActionId.APPROVE) or ""
        base = sum(len(b.bodies) for b in self.noise_sent)
        bodies = [block_actions(noise_user(base + n), ActionId.APPROVE.value, value, CHANNEL,
                                step.ts, step.thread_ts) for n in range(NOISE)]
        burst = Burst(f"{old.url}/slack/events", bodies, NOISE_CONCURRENCY,
                      signal_after=NOISE // 3)
        self.noise_sent.append(burst)
        sending = asyncio.create_task(burst.run())
        await burst.answered.wait()
        old.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(old.process.wait, EXIT_BOUND) == 0
        await sending
        return await self.start(name)

    def acked_noise(self) -> list[str]:
        base, acked = 0, []
        for burst in self.noise_sent:
            acked += [noise_user(base + n) for n in burst.acked()]
            base += len(burst.bodies)
        return acked


def noise_user(n: int) -> str:
    return f"U_NOISE{n:03d}"


async def approve(via: tuple[Bot, Bot], fake: FakeSlack, number: int) -> Message:
    """Step `number`'s two approvals, the first by `via[0]`, the second by `via[1]`; until the
    step succeeded."""
    message = await step_message(fake, number, ActionId.APPROVE)
    await via[0].click("U_BOB", ActionId.APPROVE, message)
    await via[1].click("U_CAROL", ActionId.APPROVE, message)
    await fake.wait_for(lambda: "succeeded" in message.text, within=120)
    return message


def posts(fake: FakeSlack) -> list[str]:
    """Each chat.postMessage that Slack took, as what it posted where."""
    return [json.dumps([c.args.get("channel"), c.args.get("thread_ts"), c.args.get("text"),
                        c.args.get("blocks")], sort_keys=True, default=str)
            for c in fake.calls_to("chat.postMessage") if c.error is None]


async def test_rolling_restart_of_two_replicas_mid_run(
    bots: list[Bot], fake_slack: FakeSlack, bot_db_url: str, sandbox_api: SandboxApi,
    sandbox_seed: SandboxSeed, tmp_path: Path,
) -> None:
    env = sandbox_env(fake_slack, bot_db_url, sandbox_api, sandbox_seed, tmp_path,
                      MAILER="outbox", OUTBOX_DIR=str(tmp_path / "outbox"))
    replicas = Replicas(env, tmp_path, fake_slack)
    try:
        a, b = await replicas.start("a1"), await replicas.start("b1")
        await start_run(a)
        await approve((a, b), fake_slack, 1)

        # A stops while its burst is in flight; step 2's approvals go to B meanwhile.
        step2 = await step_message(fake_slack, 2, ActionId.APPROVE)
        replacing = asyncio.create_task(replicas.replace(a, "a2", step2))
        await approve((b, b), fake_slack, 2)
        a = await replacing
        await approve((a, b), fake_slack, 3)

        step4 = await step_message(fake_slack, 4, ActionId.APPROVE)
        replacing = asyncio.create_task(replicas.replace(b, "b2", step4))
        await approve((a, a), fake_slack, 4)
        b = await replacing
        await approve((b, a), fake_slack, 5)
        await approve((a, b), fake_slack, 6)
        await until_inbox_empty(bot_db_url)
    finally:
        bots.extend(replicas.started)

    runs = await fetch(bot_db_url, "SELECT status FROM rollback_runs")
    assert [r["status"] for r in runs] == ["completed"]
    started = Counter(r["step"] for r in await fetch(
        bot_db_url, "SELECT step FROM incident_events WHERE kind = 'step_started'"))
    assert len(started) == 6 and set(started.values()) == {1}, started
    executions = await fetch(bot_db_url, "SELECT status FROM step_executions")
    assert [r["status"] for r in executions] == ["succeeded"] * 6
    approvals = Counter(r["user_id"] for r in await fetch(
        bot_db_url, "SELECT user_id FROM approvals"))
    assert approvals == {"U_BOB": 6, "U_CAROL": 6}

    acked = replicas.acked_noise()
    assert len(acked) >= 2 * (NOISE // 3)
    refused = await refusals_by_actor(bot_db_url)
    assert {user: refused.get(user) for user in acked if refused.get(user) != 1} == {}
    assert max(n for user, n in refused.items() if user.startswith("U_NOISE")) == 1
    assert await inbox_unprocessed(bot_db_url) == 0

    twice = [post for post, n in Counter(posts(fake_slack)).items() if n > 1]
    assert twice == [], "a message was posted to Slack twice"
    for bot in replicas.started:
        assert unclean_lines(bot.log) == [], bot.log.name
