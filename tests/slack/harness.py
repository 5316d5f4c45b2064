"""The bot's HTTP app on a free port, Web API pointed at the fake Slack, driven as Slack does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.step_protocol import Step
from bot.domain.steps import StepName
from bot.engine.engine import Engine
from bot.settings import Settings
from bot.slack.actions import START_MODAL_CALLBACK, ActionId, ButtonValue
from bot.slack.app import SlackFront, build_slack_front
from bot.slack.http import build_web_app
from bot.slack.modal import (
    ACK_ACTION_ID,
    ACK_BLOCK_ID,
    ACK_VALUE,
    REASON_ACTION_ID,
    REASON_BLOCK_ID,
    TARGET_ACTION_ID,
    TARGET_BLOCK_ID,
)
from tests.slackwire.fake_web_api import FakeSlack, Message
from tests.slackwire.requests import (
    block_actions,
    sign,
    slash_command,
    trigger_in,
    view_submission,
)
from tests.slackwire.serve import serve_on_free_port

SECRET = "test-signing-secret"
CHANNEL, CHANNEL_NAME = "C_ONCALL", "oncall-engineering"
ENGINEERS = ("U_ALICE", "U_BOB", "U_CAROL")


@dataclass
class SlackBot:
    url: str
    fake: FakeSlack
    engine: Engine
    front: SlackFront
    http: aiohttp.ClientSession

    async def post(self, body: bytes, headers: Mapping[str, str] | None = None) -> tuple[int, str]:
        """Send one request; return its answer once the work it handed over has finished."""
        trigger = trigger_in(body)
        if trigger:
            self.fake.restamp_trigger(trigger)  # Slack's 3 s start when the request is sent
        async with self.http.post(self.url, data=body,
                                  headers=dict(headers or sign(body, SECRET))) as answer:
            result = answer.status, await answer.text()
        await self.front.background.settled()
        return result

    async def command(self, text: str, user: str = "U_ALICE", channel: str = CHANNEL,
                      channel_name: str = CHANNEL_NAME) -> tuple[int, str]:
        return await self.post(slash_command(text, user, channel, channel_name))

    def start_form(self) -> dict[str, Any] | None:
        """The start form as the bot last showed it (the loading view turned into the form)."""
        for call in reversed(self.fake.calls_to("views.update")):
            if call.error is None and call.args["view"].get("callback_id") == \
                    START_MODAL_CALLBACK:
                return call.args["view"]  # type: ignore[no-any-return]
        return None

    def modal_texts(self) -> list[str]:
        """Every text the bot showed in a modal, in order (loading, refusals, forms)."""
        return [json.dumps(c.args["view"]) for c in self.fake.calls
                if c.method in ("views.open", "views.update") and c.error is None]

    async def submit_start(self, user: str, reason: str, acknowledged: bool = True,
                           channel: str = CHANNEL, target: str | None = None
                           ) -> tuple[int, str]:
        """Submit the start form the bot showed (its private_metadata), or one naming
        `channel` when none was shown (a replayed or forged submission). A form with a target
        select sends what Slack sends: the option chosen (`target`), else its initial one."""
        values: dict[str, Any] = {
            REASON_BLOCK_ID: {REASON_ACTION_ID: {"type": "plain_text_input", "value": reason}},
            ACK_BLOCK_ID: {ACK_ACTION_ID: {"type": "checkboxes", "selected_options": (
                [{"value": ACK_VALUE}] if acknowledged else [])}},
        }
        form = self.start_form()
        select = next((b["element"] for b in (form or {}).get("blocks", [])
                       if b.get("block_id") == TARGET_BLOCK_ID), None)
        if select is not None:
            chosen = next((o for o in select["options"] if o["value"] == target),
                          select.get("initial_option"))
            values[TARGET_BLOCK_ID] = {TARGET_ACTION_ID: {"type": "static_select",
                                                          "selected_option": chosen}}
        metadata = form["private_metadata"] if form else channel
        return await self.post(view_submission(user, START_MODAL_CALLBACK, metadata, values))

    async def click(self, user: str, action: ActionId, message: Message,
                    value: str | None = None) -> tuple[int, str]:
        """Press a button as it is shown now, or (`value`) as an older copy of it showed it."""
        value = value or button_value(message, action)
        assert value is not None, f"no {action} button on {message.text}"
        return await self.post(block_actions(user, action.value, value, message.channel,
                                             message.ts, message.thread_ts))

    def root(self) -> Message | None:
        roots = self.fake.roots(CHANNEL)
        return roots[0] if roots else None

    def step_messages(self, step_number: int) -> list[Message]:
        root = self.root()
        if root is None:
            return []
        return [m for m in self.fake.thread(CHANNEL, root.ts)
                if m.text.startswith(f"Step {step_number}/6")]

    async def the_run_id(self) -> str:
        from sqlalchemy import select

        from bot.db.models import RollbackRun

        async with self.engine.sessions() as session:
            ids = (await session.execute(select(RollbackRun.id))).scalars().all()
        assert len(ids) == 1, ids
        return str(ids[0])

    def replies(self, user: str) -> list[str]:
        """What `user` was told privately after the ack (by response_url), oldest first."""
        return self.fake.replies_to(user)


def button_value(message: Message, action: ActionId) -> str | None:
    for block in message.blocks:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("action_id") == action.value:
                return str(element["value"])
    return None


def button_of(message: Message, action: ActionId) -> ButtonValue | None:
    value = button_value(message, action)
    return ButtonValue.parse(value) if value else None


def message_text(message: Message) -> str:
    """The message as a person reads it: its blocks and fallback text, `&gt;` shown as `>`
    (raw mrkdwn, where a mention would ping, is in `message.blocks`)."""
    raw = json.dumps(message.blocks, ensure_ascii=False) + message.text
    return raw.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@asynccontextmanager
async def running_bot(
    fake: FakeSlack, sessions: async_sessionmaker[AsyncSession], steps: Mapping[StepName, Step],
    **overrides: Any,
) -> AsyncIterator[SlackBot]:
    values: dict[str, Any] = {
        "slack_bot_token": "xoxb-test-token", "slack_signing_secret": SECRET,
        "slack_api_url": fake.url, "rollback_channel": CHANNEL_NAME,
        "approver_user_ids": ",".join(ENGINEERS), "slack_write_interval_seconds": 0.02,
        "step_timeout_seconds": 60, **overrides,
    }
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    engine = Engine(sessions, settings, steps, replica_id="slack-test")
    front = build_slack_front(engine, settings, http=True)
    front.mirror.start()
    runner, port = await serve_on_free_port(build_web_app(front.app))
    async with aiohttp.ClientSession() as http:
        try:
            yield SlackBot(f"http://127.0.0.1:{port}/slack/events", fake, engine, front, http)
        finally:
            await engine.wait_idle()
            await front.close()
            await engine.shutdown()
            await runner.cleanup()
        # What Slack takes but its reference advises against (a message without fallback
        # text, a block_id kept for new content) fails the test that caused it.
        assert not fake.lint, fake.lint
