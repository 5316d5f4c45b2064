"""Thin listeners for the follow-through: the board's Escalate button, `/rollback-phase3
escalate <why>`, and the checklist's "I'll own it" / "Done". They ack, parse, and hand over to
the engine's follow-up actions; a refusal is an ephemeral message that says why. A button is
routed to its run's target: that target's engine, and whether the person may act there."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.events import Source
from bot.domain.follow_ups import FollowUpAction
from bot.engine.engine import Actor
from bot.engine.follow_up_actions import act_on_follow_up, escalate
from bot.slack.actions import ActionId, ButtonValue, FollowUpValue
from bot.slack.background import Background
from bot.slack.mrkdwn import escape
from bot.slack.people import PeopleLookupFailed
from bot.slack.served_targets import ServedTarget, ServedTargets

BOARD_ESCALATION = "escalated from the status board"
Tell = Callable[[str], Awaitable[None]]


class FollowUpListeners:
    def __init__(self, targets: ServedTargets, background: Background) -> None:
        self.targets = targets
        self.background = background

    def register(self, app: AsyncApp) -> None:
        app.action(ActionId.ESCALATE.value)(self.on_escalate)
        app.action(re.compile(rf"^{ActionId.FOLLOW_UP_OWN.value}(-\w+)?$"))(self.on_own)
        app.action(re.compile(rf"^{ActionId.FOLLOW_UP_DONE.value}(-\w+)?$"))(self.on_done)

    @staticmethod
    async def _actor(user: dict[str, Any], target: ServedTarget) -> Actor:
        name = user.get("username") or user.get("name") or user["id"]
        return Actor(user["id"], name, Source.SLACK,
                     await target.engineers.is_authorised(user["id"]))

    async def _clicker(self, client: AsyncWebClient, body: dict[str, Any],
                       target: ServedTarget) -> Actor | None:
        """Who clicked, or None once they were told that who may act could not be read (the
        click is never left unanswered)."""
        try:
            return await self._actor(body["user"], target)
        except PeopleLookupFailed as failed:
            await self._tell(client, body, ":no_entry: Refused: who may approve could not be "
                             f"checked. {escape(failed)}")
            return None

    async def escalate_command(self, target: ServedTarget, actor: Actor, why: str, tell: Tell
                               ) -> None:
        """`/rollback-phase3 escalate [target] <why>` (the listener already checked the
        channel and the target)."""
        answer = await escalate(target.engine, actor, None, why)
        await tell(("Escalated: " if answer.accepted else "Refused: ") + answer.message)

    # --- buttons ------------------------------------------------------------------------------

    async def on_escalate(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        self.background.spawn(self._escalate(body, client), "escalate click")

    async def _escalate(self, body: dict[str, Any], client: AsyncWebClient) -> None:
        try:
            value = ButtonValue.parse(body["actions"][0]["value"])
        except (KeyError, IndexError, ValueError):
            await self._tell(client, body, "Refused: this button is not recognised.")
            return
        target = await self.targets.of_run(value.run_id) or self.targets.first
        actor = await self._clicker(client, body, target)
        if actor is None:
            return
        answer = await escalate(target.engine, actor, value.run_id, BOARD_ESCALATION)
        if not answer.accepted:
            await self._tell(client, body, f"Refused: {answer.message}")

    async def on_own(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        self.background.spawn(self._follow_up(body, client, FollowUpAction.OWN), "own click")

    async def on_done(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        self.background.spawn(self._follow_up(body, client, FollowUpAction.DONE), "done click")

    async def _follow_up(self, body: dict[str, Any], client: AsyncWebClient,
                         action: FollowUpAction) -> None:
        try:
            value = FollowUpValue.parse(body["actions"][0]["value"])
        except (KeyError, IndexError, ValueError):
            await self._tell(client, body, "Refused: this button is not recognised.")
            return
        target = await self.targets.of_run(value.run_id) or self.targets.first
        actor = await self._clicker(client, body, target)
        if actor is None:
            return
        answer = await act_on_follow_up(target.engine, actor, value.run_id, value.item, action)
        if not answer.accepted:
            await self._tell(client, body, f"Refused: {answer.message}")

    @staticmethod
    async def _tell(client: AsyncWebClient, body: dict[str, Any], text: str) -> None:
        channel = body.get("channel", {}).get("id") or body.get("container", {}).get("channel_id")
        thread_ts = body.get("message", {}).get("thread_ts")
        await client.chat_postEphemeral(channel=channel, user=body["user"]["id"], text=text,
                                        thread_ts=thread_ts)
