"""The follow-through as engineers meet it in Slack (the fake Web API) with PagerDuty at the wire
(the fake Events API): pages and their failures in the thread, Escalate, reminders that mention
the approvers, an expired approval asked again, the post-rollback checklist tracked to done."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.paging_policy import escalation_dedup_key, run_dedup_key
from bot.domain.states import StepStatus
from bot.domain.steps import StepName
from bot.engine.follow_through import FollowThrough
from bot.paging.events_api import PagerDutyEvents
from bot.slack.actions import ActionId
from tests.engine.fake_steps import ScriptedStep, as_steps, scripted_steps
from tests.pagerwire.fake_events_api import FakeEventsApi
from tests.pagerwire.fixtures import ROUTING_KEY
from tests.slack.harness import SlackBot, button_value, message_text, running_bot
from tests.slack.test_slack_front import approve, start_rollback
from tests.slackwire.fake_web_api import FakeSlack, Message


class PagedBot:
    def __init__(self, bot: SlackBot, follow: FollowThrough) -> None:
        self.bot, self.follow = bot, follow

    def thread_text(self) -> str:
        root = self.bot.root()
        assert root is not None
        return "\n".join(message_text(m) for m in self.bot.fake.thread(root.channel, root.ts))

    def checklist(self) -> Message | None:
        root = self.bot.root()
        if root is None:
            return None
        return next((m for m in self.bot.fake.thread(root.channel, root.ts)
                     if m.text.startswith("Post-rollback actions")), None)

    async def sql(self, statement: str) -> None:
        async with self.bot.engine.sessions() as session, session.begin():
            await session.execute(text(statement))


@pytest.fixture
def steps() -> dict[StepName, ScriptedStep]:
    return scripted_steps()


@pytest.fixture
async def paged(
    fake_slack: FakeSlack, fake_pagerduty: FakeEventsApi,
    bot_sessionmaker: async_sessionmaker[AsyncSession], steps: dict[StepName, ScriptedStep],
) -> AsyncIterator[PagedBot]:
    async with running_bot(
        fake_slack, bot_sessionmaker, as_steps(steps), pagerduty_routing_key=ROUTING_KEY,
        pagerduty_events_url=fake_pagerduty.url, page_retry_seconds=0,
        escalation_usergroup_id="S_LEADS", approval_reminder_minutes=15,
        approval_page_minutes=30, follow_through_interval_seconds=0.2,
    ) as bot:
        bot.front.start_notices()
        pager = PagerDutyEvents(ROUTING_KEY, fake_pagerduty.url, backoff_seconds=0)
        follow = FollowThrough(bot.engine, pager,
                               approvers=bot.front.targets.first.engineers.authorised)
        follow.start()
        try:
            yield PagedBot(bot, follow)
        finally:
            await follow.stop()
            await pager.close()


def board_button(message: Message, action: ActionId) -> str | None:
    return button_value(message, action)


async def test_a_rollback_pages_then_ends_with_a_checklist_tracked_to_done(
    paged: PagedBot, fake_pagerduty: FakeEventsApi,
) -> None:
    bot = paged.bot
    await start_rollback(bot)
    await bot.fake.wait_for(lambda: ":pager: PagerDuty paged" in paged.thread_text())
    for number in range(1, 7):
        message = await approve(bot, number, "U_BOB", "U_CAROL")
        await bot.fake.wait_for(lambda m=message: "succeeded" in m.text)  # type: ignore[misc]
    checklist = await bot.fake.wait_for(paged.checklist)
    root = bot.root()
    assert root is not None
    thread = bot.fake.thread(root.channel, root.ts)
    summary_at = next(i for i, m in enumerate(thread) if m.text.startswith("Rollback completed"))
    assert thread.index(checklist) > summary_at, "the checklist follows the summary"
    assert "Root cause analysis" in message_text(checklist)
    assert "Post-rollback actions" in message_text(thread[summary_at])
    await bot.fake.wait_for(lambda: "0/5 done" in message_text(bot.root()))  # type: ignore[arg-type]
    assert not board_button(bot.root(), ActionId.ESCALATE)  # type: ignore[arg-type]

    value = json.dumps({"run_id": await bot.the_run_id(), "item": "root_cause"})
    assert (await bot.click("U_BOB", ActionId.FOLLOW_UP_OWN, checklist, value))[0] == 200
    await bot.fake.wait_for(lambda: "Owner: <@U_BOB>" in message_text(checklist))
    assert (await bot.click("U_CAROL", ActionId.FOLLOW_UP_DONE, checklist, value))[0] == 200
    await bot.fake.wait_for(lambda: "Done by <@U_CAROL>" in message_text(checklist))
    await bot.fake.wait_for(lambda: "1/5 done" in message_text(bot.root()))  # type: ignore[arg-type]
    # (An outsider's click is refused in the engine: test_follow_through.py. Mallory is not in
    # the channel, and the strict fake refuses an ephemeral to a non-member.)

    await bot.command("status", user="U_BOB")
    await bot.fake.wait_for(lambda: bool(bot.replies("U_BOB")))  # by response_url, after the ack
    status = bot.replies("U_BOB")[-1]
    assert "1/5 done" in status and "Fix the issues" in status
    assert "Root cause" not in status  # done: no longer listed as open

    run_id = await bot.the_run_id()
    await fake_pagerduty.wait_for(
        lambda: [a.status for a in fake_pagerduty.alerts_for(run_dedup_key(run_id))]
        == ["resolved"])


async def test_a_paging_outage_shows_in_the_thread_and_the_rollback_completes(
    paged: PagedBot, fake_pagerduty: FakeEventsApi, steps: dict[StepName, ScriptedStep],
) -> None:
    fake_pagerduty.outage(500)
    bot = paged.bot
    await start_rollback(bot)
    for number in range(1, 7):
        message = await approve(bot, number, "U_BOB", "U_CAROL")
        await bot.fake.wait_for(lambda m=message: "succeeded" in m.text)  # type: ignore[misc]
    assert all(step.runs == 1 for step in steps.values())
    await bot.fake.wait_for(lambda: "Paging failed" in paged.thread_text())
    assert "page on-call by hand" in paged.thread_text()
    assert fake_pagerduty.events == []


async def test_escalate_mentions_the_group_and_pages_critical(
    paged: PagedBot, fake_pagerduty: FakeEventsApi,
) -> None:
    bot = paged.bot
    root = await start_rollback(bot)
    await bot.fake.wait_for(lambda: board_button(bot.root(), ActionId.ESCALATE))  # type: ignore[arg-type]
    assert (await bot.click("U_CAROL", ActionId.ESCALATE, bot.root()))[0] == 200  # type: ignore[arg-type]
    await bot.fake.wait_for(lambda: "<!subteam^S_LEADS> escalation by <@U_CAROL>"
                            in paged.thread_text())
    run_id = await bot.the_run_id()
    alert = await fake_pagerduty.wait_for(
        lambda: fake_pagerduty.open_alert(escalation_dedup_key(run_id)))
    assert alert.severity == "critical"
    # From the command, with hostile text: it is shown, never a mention.
    await bot.command("escalate <!channel> customers cannot log in", user="U_BOB")
    await bot.fake.wait_for(lambda: "customers cannot log in" in paged.thread_text())
    escalations = [m for m in bot.fake.thread(root.channel, root.ts) if m.text == "Escalation"]
    raw = json.dumps(escalations[-1].blocks) + escalations[-1].text  # what Slack would parse
    assert "&lt;!channel&gt;" in raw and "<!channel>" not in raw
    assert "<!channel> customers" in message_text(escalations[-1])  # shown as typed
    assert "Step 1/6" in raw


async def test_a_waiting_step_reminds_its_approvers_in_the_thread(
    paged: PagedBot, fake_pagerduty: FakeEventsApi,
) -> None:
    bot = paged.bot
    await start_rollback(bot)
    await approve(bot, 1, "U_BOB")
    await paged.sql("UPDATE step_executions SET created_at = now() - interval '16 minutes'")
    paged.follow.notify(await bot.the_run_id())
    await bot.fake.wait_for(lambda: ":bell:" in paged.thread_text())
    reminder = paged.thread_text()
    assert "<@U_CAROL>" in reminder.split(":bell:")[1]  # still needed
    assert "<@U_BOB>: Step" not in reminder  # Bob approved already; Alice started it
    assert "(1/2; approved by u_bob)" in reminder


async def test_an_expired_approval_is_struck_and_asked_again(
    paged: PagedBot, steps: dict[StepName, ScriptedStep],
) -> None:
    bot = paged.bot
    await start_rollback(bot)
    message = await approve(bot, 1, "U_BOB")
    await paged.sql("UPDATE approvals SET created_at = now() - interval '61 minutes'")
    await bot.click("U_CAROL", ActionId.APPROVE, message)
    # The watcher may note the expiry a moment before Carol's click is drawn: wait for both.
    await bot.fake.wait_for(lambda: "expired, approve again: ~<@U_BOB>~" in message_text(message)
                            and "Approvals* 1/2: <@U_CAROL>" in message_text(message))
    assert steps[StepName.BACKUP].runs == 0
    view = await bot.engine.run_view(await bot.the_run_id())
    assert view.steps[0].status is StepStatus.AWAITING_APPROVAL
    await bot.fake.wait_for(lambda: "approval by <@U_BOB>" in paged.thread_text())
    await bot.click("U_BOB", ActionId.APPROVE, message)
    await bot.fake.wait_for(lambda: "succeeded" in message.text)
    assert steps[StepName.BACKUP].runs == 1
