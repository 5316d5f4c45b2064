"""Thin Bolt listeners: ack at once, parse a typed payload, hand over to the engine.

Each listener answers Slack first (a modal's validation errors are part of that answer) and
leaves the rest — the engine call, the reply — to `Background`, so the ack never waits on the
database or the Web API. No step work happens here. A refusal is an ephemeral message that says
why.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.approvals import APPROVALS_NEEDED, Refusal, eligible_approvers
from bot.domain.events import Source
from bot.domain.paging_policy import paging_status
from bot.engine.engine import Actor, Answer, Click, ClickAction, Engine, ReceivedClick
from bot.engine.reports import plans_text, status_text
from bot.settings import Settings
from bot.slack import blocks, modal
from bot.slack.actions import START_MODAL_CALLBACK, ActionId, ButtonValue
from bot.slack.background import Background
from bot.slack.follow_up_listeners import FollowUpListeners
from bot.slack.people import Engineers, is_rollback_channel

log = logging.getLogger(__name__)

COMMAND = "/rollback-phase3"
REJECT_MODAL_CALLBACK = "rollback_reject"
REJECT_BLOCK, REJECT_INPUT = "reject_reason", "reject_reason_input"


def thread_link(channel_id: str | None, ts: str | None) -> str:
    if not channel_id or not ts:
        return "(its thread is being posted)"
    return f"https://slack.com/archives/{channel_id}/p{ts.replace('.', '')}"


class Listeners:
    def __init__(self, engine: Engine, engineers: Engineers, settings: Settings,
                 background: Background) -> None:
        self.engine = engine
        self.engineers = engineers
        self.settings = settings
        self.background = background
        engine.authorise_with(engineers.is_authorised)  # for clicks processed after a restart
        self.follow_ups = FollowUpListeners(engine, engineers, background)

    def register(self, app: AsyncApp) -> None:
        app.command(COMMAND)(self.on_command)
        app.view(START_MODAL_CALLBACK)(self.on_start_submission)
        app.view(REJECT_MODAL_CALLBACK)(self.on_reject_submission)
        app.action(ActionId.APPROVE.value)(self.on_approve)
        app.action(ActionId.REJECT.value)(self.on_reject)
        app.action(ActionId.RETRY.value)(self.on_retry)
        app.action(ActionId.ABORT.value)(self.on_abort)
        self.follow_ups.register(app)

    async def _actor(self, user_id: str, user_name: str) -> Actor:
        return Actor(user_id, user_name, Source.SLACK, await self.engineers.is_authorised(user_id))

    # --- the slash command ------------------------------------------------------------------

    async def on_command(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        self.background.spawn(self._command(body, client), f"{COMMAND} {body.get('text', '')!r}")

    async def _command(self, body: dict[str, Any], client: AsyncWebClient) -> None:
        channel_id, user_id = body.get("channel_id", ""), body.get("user_id", "")
        text = (body.get("text") or "").strip()
        word = text.split(maxsplit=1)[0].lower() if text else "help"

        async def tell(message: str) -> None:
            await client.chat_postEphemeral(channel=channel_id, user=user_id, text=message)

        if word == "help":
            await tell(blocks.help_text())
            return
        if not is_rollback_channel(self.settings, channel_id, body.get("channel_name", "")):
            await tell(f"Rollbacks run only in #{self.settings.rollback_channel.lstrip('#')}.")
            return
        actor = await self._actor(user_id, body.get("user_name", user_id))
        if not actor.authorised:
            await tell("You are not an authorised engineer for rollbacks "
                       "(APPROVER_USER_IDS / APPROVER_USERGROUP_ID).")
            return
        if word == "status":
            await tell(await status_text(self.engine))
        elif word == "plan":
            s = self.settings
            await tell("Dry run — nothing changed:\n" + plans_text(await self.engine.dry_run())
                       + "\n" + paging_status(s.pagerduty_routing_key is not None, s.page_on,
                                              s.pagerduty_events_url))
        elif word == "escalate":
            await self.follow_ups.escalate_command(actor, text[len("escalate"):].strip(), tell)
        elif word == "check":
            from bot.preflight import preflight_text

            await tell(await preflight_text(self.settings))
        else:
            await self._open_start_modal(body, actor, client, tell)

    async def _open_start_modal(
        self, body: dict[str, Any], actor: Actor, client: AsyncWebClient, tell: Any
    ) -> None:
        active = await self.engine.active_run_id()
        if active is not None:
            view = await self.engine.run_view(active)
            await tell("A rollback is already active: "
                       + thread_link(view.channel_id, view.thread_ts))
            return
        eligible = eligible_approvers(
            await self.engineers.authorised(), actor.user_id, self.settings.allow_self_approval
        )
        if len(eligible) < APPROVALS_NEEDED:
            await tell(f"Refused: every step needs {APPROVALS_NEEDED} approvals from engineers "
                       f"other than you, and only {len(eligible)} are authorised.")
            return
        await client.views_open(
            trigger_id=body["trigger_id"],
            view=modal.start_modal(body.get("text", "").strip(), body.get("channel_id", "")),
        )

    async def on_start_submission(
        self, ack: Any, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        reason, acknowledged = modal.parse_start_submission(view["state"]["values"])
        if not acknowledged or not reason:
            errors = {}
            if not acknowledged:
                errors[modal.ACK_BLOCK_ID] = "Acknowledge that this rollback is LOSSY."
            if not reason:
                errors[modal.REASON_BLOCK_ID] = "Say why you are rolling back."
            await ack(response_action="errors", errors=errors)
            return
        await ack()
        self.background.spawn(self._start(body, view, reason, client), "start submission")

    async def _start(
        self, body: dict[str, Any], view: dict[str, Any], reason: str, client: AsyncWebClient
    ) -> None:
        user = body["user"]
        actor = await self._actor(user["id"], user.get("username") or user.get("name", user["id"]))
        channel_id = view.get("private_metadata") or self.settings.rollback_channel
        answer = await self.engine.start_run(actor, reason, channel_id)
        if not answer.accepted:
            await self._refuse(client, channel_id, actor.user_id, answer, None)

    # --- buttons ----------------------------------------------------------------------------

    async def _click(self, body: dict[str, Any]) -> Click | None:
        try:
            value = ButtonValue.parse(body["actions"][0]["value"])
        except (KeyError, IndexError, ValueError):
            return None
        user = body["user"]
        actor = await self._actor(user["id"], user.get("username") or user.get("name", user["id"]))
        return Click(actor, value.run_id, value.execution_id, value.fingerprint)

    async def _refuse(
        self, client: AsyncWebClient, channel: str, user: str, answer: Answer,
        thread_ts: str | None,
    ) -> None:
        text = f"Refused: {answer.message}"
        if answer.run_id and answer.refusal is Refusal.ANOTHER_RUN_ACTIVE:
            view = await self.engine.run_view(answer.run_id)
            text += " " + thread_link(view.channel_id, view.thread_ts)
        await client.chat_postEphemeral(
            channel=channel, user=user, text=text, thread_ts=thread_ts
        )

    async def _receive(self, body: dict[str, Any], action: str, value: str,
                       reason: str | None = None) -> int | None:
        """Record the click in the engine's inbox — before Slack is told OK, so an
        acknowledged click survives a crash right after the ack. None: not a button of ours."""
        try:
            button = ButtonValue.parse(value)
        except ValueError:
            return None
        user = body["user"]
        return await self.engine.accept_click(ReceivedClick(
            ClickAction(action), user["id"], user.get("username") or user.get("name", user["id"]),
            Source.SLACK, button.run_id, button.execution_id, button.fingerprint, reason))

    async def _handle(
        self, ack: Any, body: dict[str, Any], client: AsyncWebClient, action: str
    ) -> None:
        actions = body.get("actions") or [{}]
        inbox_id = await self._receive(body, action, str(actions[0].get("value", "")))
        await ack()
        self.background.spawn(self._act(body, client, action, inbox_id), f"{action} click")

    async def _act(self, body: dict[str, Any], client: AsyncWebClient, action: str,
                   inbox_id: int | None) -> None:
        click = await self._click(body)
        channel = body.get("channel", {}).get("id") or body.get("container", {}).get("channel_id")
        thread_ts = body.get("message", {}).get("thread_ts")
        if click is None or inbox_id is None:
            await client.chat_postEphemeral(channel=channel, user=body["user"]["id"],
                                            text="Refused: this button is not recognised.")
            return
        answer = await self.engine.process_click(inbox_id, click.actor.authorised)
        if answer is None:  # another replica processed it
            return
        if not answer.accepted:
            await self._refuse(client, channel, click.actor.user_id, answer, thread_ts)

    async def on_approve(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await self._handle(ack, body, client, "approve")

    async def on_retry(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await self._handle(ack, body, client, "retry")

    async def on_abort(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await self._handle(ack, body, client, "abort")

    async def on_reject(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Reject asks why in a modal; the run stops when the reason is submitted."""
        await ack()
        self.background.spawn(self._ask_why(body, client), "reject click")

    async def _ask_why(self, body: dict[str, Any], client: AsyncWebClient) -> None:
        await client.views_open(trigger_id=body["trigger_id"], view={
            "type": "modal",
            "callback_id": REJECT_MODAL_CALLBACK,
            "private_metadata": body["actions"][0]["value"],
            "title": {"type": "plain_text", "text": "Reject this step"},
            "submit": {"type": "plain_text", "text": "Reject and stop"},
            "blocks": [{
                "type": "input", "block_id": REJECT_BLOCK,
                "label": {"type": "plain_text", "text": "Why? (recorded in the incident log)"},
                "element": {"type": "plain_text_input", "action_id": REJECT_INPUT,
                            "multiline": True},
            }],
        })

    async def on_reject_submission(
        self, ack: Any, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        reason = (view["state"]["values"].get(REJECT_BLOCK, {}).get(REJECT_INPUT, {})
                  .get("value") or "").strip()
        if not reason:
            await ack(response_action="errors", errors={REJECT_BLOCK: "Say why."})
            return
        inbox_id = await self._receive(body, "reject", view.get("private_metadata", ""), reason)
        await ack()
        self.background.spawn(self._reject(body, view, inbox_id, client), "reject submission")

    async def _reject(
        self, body: dict[str, Any], view: dict[str, Any], inbox_id: int | None,
        client: AsyncWebClient,
    ) -> None:
        try:
            value = ButtonValue.parse(view.get("private_metadata", ""))
        except ValueError:
            return
        user = body["user"]
        actor = await self._actor(user["id"], user.get("username") or user.get("name", user["id"]))
        answer = await self.engine.process_click(inbox_id, actor.authorised) \
            if inbox_id is not None else None
        if answer is None:
            return
        if not answer.accepted:
            run = await self.engine.run_view(value.run_id)
            await self._refuse(client, run.channel_id or self.settings.rollback_channel,
                               actor.user_id, answer, run.thread_ts)
