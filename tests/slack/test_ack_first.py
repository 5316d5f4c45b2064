"""Slack is answered before the work a request starts; that work is neither lost nor silent."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.slack.harness import SECRET, SlackBot
from tests.slackwire.requests import sign, slash_command


async def send(bot: SlackBot, body: bytes) -> int:
    """Post without waiting for the handed-over work (unlike `SlackBot.post`)."""
    async with asyncio.timeout(30), \
            bot.http.post(bot.url, data=body, headers=sign(body, SECRET)) as answer:
        return answer.status


def status_command(user: str) -> bytes:
    return slash_command("status", user, "C_ONCALL", "oncall-engineering")


async def test_the_ack_does_not_wait_for_the_reply(bot: SlackBot) -> None:
    release = bot.fake.hold("response_url")
    assert await send(bot, status_command("U_ALICE")) == 200
    # Answered, while the reply is still held at Slack (or not even sent yet).
    assert bot.front.background.pending == 1
    release.set()
    await bot.front.background.settled()
    assert "No rollback is active." in bot.replies("U_ALICE")[-1]


async def test_shutdown_waits_for_work_already_acked(bot: SlackBot) -> None:
    release = bot.fake.hold("response_url")
    assert await send(bot, status_command("U_BOB")) == 200
    await bot.fake.wait_for(lambda: bot.fake.calls_to("response_url"))
    drain = asyncio.create_task(bot.front.background.drain(within=30))
    await asyncio.sleep(0.2)
    assert not drain.done(), "shutdown waits while acked work is in flight"
    release.set()
    await drain
    assert bot.front.background.pending == 0
    assert bot.replies("U_BOB"), "the reply was delivered before shutdown went on"


async def test_work_that_fails_after_the_ack_is_logged_and_told(
    bot: SlackBot, caplog: pytest.LogCaptureFixture
) -> None:
    bot.fake.fail_next("response_url", status=500, times=1)  # the answer itself is lost
    with caplog.at_level(logging.ERROR, logger="bot.slack.background"):
        status, _ = await bot.command("status")
    assert status == 200
    failures = [r for r in caplog.records if "failed after Slack was answered" in r.getMessage()]
    assert failures and failures[0].exc_info is not None
    # The person hears that it failed, by the same path once Slack takes it again.
    assert "failed after Slack took it" in bot.replies("U_ALICE")[-1]


async def test_a_burst_is_worked_on_a_few_at_a_time(bot: SlackBot) -> None:
    release = bot.fake.hold("response_url")
    limit = bot.front.background.limit
    for n in range(limit + 3):
        assert await send(bot, status_command(["U_ALICE", "U_BOB", "U_CAROL"][n % 3])) == 200
    await bot.fake.wait_for(lambda: len(bot.fake.calls_to("response_url")) == limit)
    assert bot.front.background.pending == limit + 3
    assert len(bot.fake.calls_to("response_url")) == limit, "no more than the limit"
    release.set()
    await bot.front.background.settled()
    assert len(bot.fake.calls_to("response_url")) == limit + 3
