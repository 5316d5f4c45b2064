"""Slow upstreams, two replicas: a page, a thread notice and an escalation mention each go out
once, however long PagerDuty or Slack take.

The bot database's sessions end a transaction left idle for longer than the step lease (at
least 10 s), as in production (bot/startup.py); the step lease here is 2 s. PagerDuty answers
429 with `Retry-After: 60` (the bot waits the minute), Slack answers a storm of 429s for 15 s,
or applies a post and loses its answer. Both replicas page and post follow-through notices.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_events
from bot.db.session import make_engine, make_sessionmaker, stalled_transaction_seconds
from bot.domain.events import EventKind
from bot.domain.paging_policy import escalation_dedup_key, run_dedup_key
from bot.domain.steps import StepName
from bot.engine.engine import Engine
from bot.engine.follow_through import FollowThrough
from bot.paging.events_api import PagerDutyEvents
from bot.slack.actions import ActionId
from bot.slack.app import build_client
from bot.slack.follow_up_notices import ThreadNotices
from bot.slack.mirror import WriteBudget
from tests.engine.fake_steps import ScriptedStep, as_steps, scripted_steps
from tests.pagerwire.fake_events_api import FakeEventsApi
from tests.pagerwire.fixtures import ROUTING_KEY
from tests.slack.harness import SlackBot, button_value, message_text, running_bot
from tests.slack.test_slack_front import start_rollback
from tests.slackwire.fake_web_api import FakeSlack, Message

LEASE = 2.0
PAGED = ":pager: PagerDuty paged"
MENTION = "<!subteam^S_LEADS>"


@dataclass
class TwoReplicas:
    bot: SlackBot  # replica A: the Slack front, its notices and follow-through
    fake_pagerduty: FakeEventsApi

    def thread(self) -> list[Message]:
        root = self.bot.root()
        assert root is not None
        return self.bot.fake.thread(root.channel, root.ts)

    def count(self, words: str) -> int:
        return sum(words in message_text(m) for m in self.thread())

    def triggers(self, dedup_key: str) -> int:
        return sum(e["dedup_key"] == dedup_key
                   for e in self.fake_pagerduty.events_with("trigger"))

    async def logged(self, kind: EventKind, dedup_key: str) -> int:
        run_id = await self.bot.the_run_id()
        async with self.bot.engine.sessions() as session:
            events = await repo_events.all_events(session, run_id)
        return sum(e.kind == kind.value and e.data.get("dedup_key") == dedup_key
                   for e in events)


@pytest.fixture
async def stalled_sessions(bot_db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions as `rollback-bot serve` opens them: an idle transaction dies after 10 s."""
    db = make_engine(bot_db_url, stalled_transaction_after=stalled_transaction_seconds(LEASE))
    try:
        yield make_sessionmaker(db)
    finally:
        await db.dispose()


@pytest.fixture
async def replicas(
    fake_slack: FakeSlack, fake_pagerduty: FakeEventsApi,
    stalled_sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[TwoReplicas]:
    steps: dict[StepName, ScriptedStep] = scripted_steps()
    async with running_bot(
        fake_slack, stalled_sessions, as_steps(steps), pagerduty_routing_key=ROUTING_KEY,
        pagerduty_events_url=fake_pagerduty.url, page_retry_seconds=0,
        escalation_usergroup_id="S_LEADS", step_lease_seconds=LEASE,
        follow_through_interval_seconds=0.2,
    ) as bot:
        other = Engine(stalled_sessions, bot.engine.settings, as_steps(steps), replica_id="b")
        other_client = build_client(bot.engine.settings)
        watchers = [*bot.front.notices, ThreadNotices(other, other_client, WriteBudget(0.02))]
        pagers = [PagerDutyEvents(ROUTING_KEY, fake_pagerduty.url, backoff_seconds=0)
                  for _ in range(2)]
        follows = [FollowThrough(engine, pager)
                   for engine, pager in zip((bot.engine, other), pagers, strict=True)]
        for watcher in (*watchers, *follows):
            watcher.start()
        try:
            yield TwoReplicas(bot, fake_pagerduty)
        finally:
            for watcher in (*follows, watchers[-1]):
                await watcher.stop()
            for pager in pagers:
                await pager.close()
            await other.shutdown()
            assert other_client.session is not None
            await other_client.session.close()


async def test_a_pager_taking_a_minute_pages_once_and_the_thread_says_so_once(
    replicas: TwoReplicas, fake_pagerduty: FakeEventsApi,
) -> None:
    fake_pagerduty.fail_next(429, times=1, retry_after=60)  # "come back in a minute"
    await start_rollback(replicas.bot)
    run_key = run_dedup_key(await replicas.bot.the_run_id())
    await replicas.bot.fake.wait_for(lambda: replicas.count(PAGED), within=120)

    assert replicas.triggers(run_key) == 1, "one page, though it took a minute"
    assert len(fake_pagerduty.alerts_for(run_key)) == 1
    assert await replicas.logged(EventKind.PAGE_SENT, run_key) == 1
    assert replicas.count(PAGED) == 1, "one notice of it in the thread"


async def test_a_storm_of_429s_longer_than_the_lease_posts_one_escalation_mention(
    replicas: TwoReplicas, fake_pagerduty: FakeEventsApi,
) -> None:
    bot = replicas.bot
    await start_rollback(bot)
    await bot.fake.wait_for(lambda: replicas.count(PAGED))  # the run's page, told
    await bot.fake.wait_for(lambda: button_value(bot.root(), ActionId.ESCALATE))  # type: ignore[arg-type]
    # Slack asks the bot to wait 3 s, five times over (15 s: longer than the lease, and than
    # an idle transaction lives); slack_sdk's retry handler then gets the post through.
    bot.fake.fail_next("chat.postMessage", 429, times=5, retry_after=3)
    assert (await bot.click("U_CAROL", ActionId.ESCALATE, bot.root()))[0] == 200  # type: ignore[arg-type]
    escalation_key = escalation_dedup_key(await bot.the_run_id())
    await bot.fake.wait_for(lambda: replicas.count(PAGED) == 2, within=90)  # its page, told
    await bot.fake.wait_for(lambda: replicas.count(MENTION), within=90)

    assert bot.fake.calls_to("chat.postMessage")[-1].error is None, "the storm passed"
    assert replicas.count(MENTION) == 1, "one escalation mention"
    assert replicas.count(PAGED) == 2, "one notice per page"
    assert replicas.triggers(escalation_key) == 1
    assert await replicas.logged(EventKind.PAGE_SENT, escalation_key) == 1


async def test_a_notice_slack_took_but_whose_answer_was_lost_is_found_not_posted_again(
    replicas: TwoReplicas,
) -> None:
    bot = replicas.bot
    await start_rollback(bot)
    await bot.fake.wait_for(lambda: replicas.count(PAGED))
    await bot.fake.wait_for(lambda: button_value(bot.root(), ActionId.ESCALATE))  # type: ignore[arg-type]
    bot.fake.lose_answer("chat.postMessage", times=1)  # posted; the bot hears a 500
    assert (await bot.click("U_CAROL", ActionId.ESCALATE, bot.root()))[0] == 200  # type: ignore[arg-type]
    await bot.fake.wait_for(lambda: replicas.count(PAGED) == 2, within=60)
    await bot.fake.wait_for(lambda: bot.fake.calls_to("conversations.replies"), within=60)

    assert [c.error for c in bot.fake.calls_to("chat.postMessage")].count("lost_answer") == 1
    assert replicas.count(MENTION) == 1, "the lost answer's post was found by its metadata"
    assert replicas.count(PAGED) == 2
