"""Each message of the thread appears once, even when Slack applies a post and loses its answer."""

from __future__ import annotations

import json
from collections import Counter

from bot.domain.steps import StepName
from tests.engine.fake_steps import ScriptedStep
from tests.slack.harness import SlackBot
from tests.slack.test_slack_front import approve, start_rollback
from tests.slackwire.fake_web_api import RecordedCall


def identity(call: RecordedCall) -> str:
    return json.dumps(call.args.get("metadata"), sort_keys=True)


def step_texts(bot: SlackBot) -> Counter[str]:
    """How many thread messages there are of each step ("Step 1/6") and of the summary."""
    root = bot.root()
    assert root is not None
    return Counter(m.text.split(":")[0] for m in bot.fake.thread(root.channel, root.ts)
                   if m.text)


async def test_a_post_applied_but_answered_500_twice_appears_once(
    bot: SlackBot, steps: dict[StepName, ScriptedStep]
) -> None:
    """Every chat.postMessage (root, each step, the summary) is applied, then answered 500
    (and would be a second time): the bot reads the thread before posting again and adopts
    what it finds, so the message is neither lost nor repeated, and each is drawn as the log
    says (the adopted copy showed an older state)."""
    steps[StepName.BACKUP].lines = 500  # an attached file too
    bot.fake.lose_answer("chat.postMessage", times=16)  # twice as many as there are posts
    root = await start_rollback(bot)
    for number in range(1, 7):
        message = await approve(bot, number, "U_BOB", "U_CAROL")
        await bot.fake.wait_for(lambda m=message: "succeeded" in m.text,  # type: ignore[misc]
                                within=60)
    await bot.fake.wait_for(lambda: any(u.get("title") == "Incident timeline (picture)"
                                        for u in bot.fake.uploads.values()), within=60)
    assert len(bot.fake.roots(root.channel)) == 1
    assert all("succeeded" in bot.step_messages(n)[0].text for n in range(1, 7))
    counts = step_texts(bot)
    assert counts == {f"Step {n}/6": 1 for n in range(1, 7)} | {"Rollback completed": 1}, counts
    assert bot.fake.calls_to("conversations.replies"), "the thread was read before a re-post"
    # Each of the 8 posts was answered 500, and a repeat would have been too: none was made.
    posts = Counter(identity(c) for c in bot.fake.calls_to("chat.postMessage"))
    assert len(posts) == 8 and set(posts.values()) == {1}, posts
    assert bot.fake.faults["chat.postMessage"].times == 8
    shared = [u for u in bot.fake.uploads.values() if u.get("thread_ts") == root.ts]
    assert sorted(u["filename"] for u in shared) == sorted(
        ["backup-output.log", f"rollback-{(await bot.the_run_id())[:8]}.md",
         f"rollback-{(await bot.the_run_id())[:8]}-timeline.png"])


async def test_a_thread_slack_will_not_let_the_bot_read_still_gets_every_message(
    bot: SlackBot, steps: dict[StepName, ScriptedStep]
) -> None:
    """Slack's docs disagree on whether a bot token may read a channel thread. If the read is
    refused for good, a lost answer may cost a duplicate message, never the rollback: every
    step is still drawn and the run completes (it is not stopped as an unwritable thread)."""
    bot.fake.refuse_next("conversations.replies", "not_allowed_token_type", times=1000)
    bot.fake.refuse_next("conversations.history", "not_allowed_token_type", times=1000)
    root = await start_rollback(bot)
    bot.fake.lose_answer("chat.postMessage", times=1)  # step 1's post: applied, answer lost
    for number in range(1, 7):
        await approve(bot, number, "U_BOB", "U_CAROL")
        # A copy whose answer was lost is never drawn again; the one the bot knows is.
        await bot.fake.wait_for(lambda n=number: any(  # type: ignore[misc]
            "succeeded" in m.text for m in bot.step_messages(n)), within=60)
    await bot.fake.wait_for(lambda: step_texts(bot)["Rollback completed"] == 1, within=60)
    counts = step_texts(bot)
    assert all(counts[f"Step {n}/6"] >= 1 for n in range(1, 7)), counts
    assert bot.fake.calls_to("conversations.replies"), "the bot tried to read the thread"
    assert len(bot.fake.roots(root.channel)) == 1
