"""Text a person or the outside world wrote pings nobody and links nowhere, wherever it shows:
the board, the step messages, the summary, the fallback texts, the replies, the timeline."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.step_protocol import Outcome as StepOutcome
from bot.domain.step_protocol import OutputSink, Plan, StepContext, StepError
from bot.domain.steps import StepName
from bot.slack.actions import ActionId
from bot.slack.mrkdwn import code_block, escape
from tests.engine.fake_steps import ScriptedStep, scripted_steps
from tests.slack.harness import CHANNEL, SlackBot, running_bot
from tests.slack.test_slack_front import approve, start_rollback, waiting_message
from tests.slackwire.fake_web_api import FakeSlack
from tests.slackwire.requests import view_submission

HOSTILE = ("ping <!channel> <!here> <!subteam^S123> <@U123> & "
           "<https://evil.example|click me> [click me](https://evil.example)")
BREAKOUT = "```\n<!channel> out of the code block"
# The only control sequences the bot may send: mentions of the engineers who approved.
ALLOWED = re.compile(r"^@U_(ALICE|BOB|CAROL)$")


@dataclass
class HostileStep(ScriptedStep):
    """A step whose plan, output, error and facts all carry hostile text."""

    async def plan(self, ctx: StepContext) -> Plan:
        return Plan(step=self.name, summary=HOSTILE, facts={"target": HOSTILE},
                    details=(HOSTILE,), warnings=(HOSTILE,))

    async def run(self, ctx: StepContext, emit: OutputSink) -> StepOutcome:
        self.runs += 1
        self.entered.set()
        emit(HOSTILE)
        emit("``` <!here> closes the code block?")
        if self.hold is not None:
            await self.hold.wait()
        if self.runs == 1:
            raise StepError(HOSTILE)
        return StepOutcome(summary=HOSTILE, facts={"note": HOSTILE, HOSTILE: 1})


@pytest.fixture
async def hostile_bot(
    fake_slack: FakeSlack, bot_sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[tuple[SlackBot, HostileStep]]:
    steps = scripted_steps()
    hostile = HostileStep(StepName.BACKUP, hold=asyncio.Event())
    steps[StepName.BACKUP] = hostile
    async with running_bot(fake_slack, bot_sessionmaker, dict(steps)) as running:
        yield running, hostile


def control_sequences(raw: str) -> list[str]:
    return re.findall(r"<([^<>]*)>", raw)


def posted_raw(fake: FakeSlack) -> list[str]:
    """Every mrkdwn and fallback text the bot sent: messages, updates, replies, modals."""
    raws = []
    for call in fake.calls:
        if call.method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
            raws.append(json.dumps(call.args.get("blocks") or [], ensure_ascii=False))
            raws.append(str(call.args.get("text", "")))
        if call.method in ("views.open", "views.update"):
            # An input's initial_value is the person's own text, shown in a text box as typed
            # (plain text is never read as mrkdwn): what they typed stays what they typed.
            shown = json.dumps(call.args["view"], ensure_ascii=False)
            raws.append(re.sub(r'"initial_value": "(?:[^"\\]|\\.)*"', "", shown))
    raws += [json.dumps(r.body, ensure_ascii=False) for r in fake.responses]
    return raws


async def test_hostile_text_pings_nobody_and_links_nowhere(
    hostile_bot: tuple[SlackBot, HostileStep]
) -> None:
    bot, step = hostile_bot
    root = await start_rollback(bot, reason=HOSTILE)
    await approve(bot, 1, "U_BOB", "U_CAROL")
    running = await bot.fake.wait_for(lambda: next(
        (m for m in bot.step_messages(1) if "closes the code block" in json.dumps(m.blocks)),
        None))
    assert step.hold is not None
    step.hold.set()
    failed = await bot.fake.wait_for(lambda: next(
        (m for m in bot.step_messages(1) if m.text.endswith("failed")), None))
    await bot.click("U_BOB", ActionId.RETRY, failed)
    await approve(bot, 1, "U_BOB", "U_CAROL")
    await bot.fake.wait_for(lambda: any(m.text.endswith("succeeded")
                                        for m in bot.step_messages(1)))
    await bot.command("status")
    message = await waiting_message(bot, 2)
    await bot.click("U_BOB", ActionId.REJECT, message)
    opened = await bot.fake.wait_for(lambda: [
        c for c in bot.fake.calls_to("views.open")
        if c.args["view"].get("callback_id") == "rollback_reject"])
    values = {"reject_reason": {"reject_reason_input": {"type": "plain_text_input",
                                                        "value": HOSTILE}}}
    await bot.post(view_submission("U_BOB", "rollback_reject",
                                   opened[0].args["view"]["private_metadata"], values))
    timeline = await bot.fake.wait_for(lambda: next(
        (u for u in bot.fake.uploads.values() if u.get("title") == "Incident timeline"
         and u.get("content")), None))

    # Every place the text went: shown as typed (escaped), no control sequence but mentions of
    # the engineers who approved.
    board = json.dumps(bot.fake.messages[root.ts].blocks)
    assert escape("<!channel>") in board and "*Stopped:*" in board
    assert escape("<https://evil.example|click me>") in json.dumps(running.blocks)
    summary = next(m for m in bot.fake.thread(CHANNEL, root.ts)
                   if m.text.startswith("Rollback aborted"))
    assert escape("<!subteam^S123>") in json.dumps(summary.blocks)
    assert escape("<!here>") in bot.replies("U_ALICE")[-1]  # the status reply
    for raw in posted_raw(bot.fake):
        assert all(ALLOWED.match(seq) for seq in control_sequences(raw)), raw
    # The code block of the running step's output is not closed early: one pair of fences.
    tail = next(b["text"]["text"] for b in running.blocks
                if b.get("type") == "section" and b["text"]["text"].startswith("```"))
    assert tail.count("```") == 2

    # The timeline: every hostile text is inside a code span, so it renders literally too.
    content = timeline["content"]
    assert HOSTILE in content
    for line in content.splitlines():
        outside = re.sub(r"(`+).*?\1", "", line)  # what is left outside code spans
        assert "<" not in outside and "](" not in outside, line


def test_a_code_block_cannot_be_broken_out_of() -> None:
    block = code_block(BREAKOUT.splitlines())
    assert block.startswith("```") and block.endswith("```")
    assert block.count("```") == 2
    assert "&lt;!channel&gt;" in block
