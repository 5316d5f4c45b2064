"""Thin Bolt listeners: ack at once, parse a typed payload, hand over to the engine.

Each listener answers Slack first and leaves the rest — the engine call, the reply — to
`Background`, so the ack never waits on the database or the Web API. What needs nothing else
(help, a command typed outside the rollback channel, a modal's validation errors) is answered
in the ack itself; everything later goes by the request's `response_url` (`Reply`), which
reaches the person in DMs and in channels the bot is not in, where `chat.postEphemeral` fails.
The start modal opens first of all, before any check, within the `trigger_id`'s 3 seconds.
No step work happens here. The acting user comes from `person_middleware` (people.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.approvals import APPROVALS_NEEDED, Refusal, eligible_approvers
from bot.domain.events import Source
from bot.engine.dry_run import dry_run_text
from bot.engine.engine import Actor, Answer, ClickAction, Engine, ReceivedClick
from bot.engine.reports import status_text
from bot.settings import Settings
from bot.slack import blocks, modal
from bot.slack.actions import START_MODAL_CALLBACK, ActionId, ButtonValue
from bot.slack.background import Background
from bot.slack.follow_up_listeners import FollowUpListeners
from bot.slack.modal import REJECT_MODAL_CALLBACK, Origin
from bot.slack.mrkdwn import clip, escape
from bot.slack.people import (
    Engineers,
    PeopleLookupFailed,
    Person,
    is_channel_id,
    is_rollback_channel,
)
from bot.slack.replies import Reply

log = logging.getLogger(__name__)

COMMAND = "/rollback-phase3"
ANYWHERE = frozenset({"help", "status"})  # read-only answers, given in any conversation
REPLY_LIMIT = 3900  # a response_url message's text is shown whole up to about 4,000
TRIGGER_LOST = ("expired_trigger_id", "exchanged_trigger_id", "invalid_trigger_id")
NOT_AUTHORISED = ("You are not an authorised engineer for rollbacks "
                  "(APPROVER_USER_IDS / APPROVER_USERGROUP_ID).")


def thread_link(channel_id: str | None, ts: str | None) -> str:
    if not channel_id or not ts:
        return "(its thread is being posted)"
    return f"https://slack.com/archives/{channel_id}/p{ts.replace('.', '')}"


class Listeners:
    def __init__(self, engine: Engine, engineers: Engineers, settings: Settings,
                 background: Background,
                 redraw_board: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.engine = engine
        # `status` draws the board again and re-homes a lost thread (the mirror's job).
        self.redraw_board = redraw_board
        self.engineers = engineers
        self.settings = settings
        self.background = background
        engine.authorise_with(self._authorised_or_refused)  # for clicks after a restart
        self.follow_ups = FollowUpListeners(engine, engineers, background)

    async def _authorised_or_refused(self, user_id: str) -> bool:
        """A click processed after a restart, when who may approve cannot be read: refused."""
        try:
            return await self.engineers.is_authorised(user_id)
        except PeopleLookupFailed as failed:
            log.warning("click of %s refused: %s", user_id, failed)
            return False

    def register(self, app: AsyncApp) -> None:
        app.command(COMMAND)(self.on_command)
        app.view(START_MODAL_CALLBACK)(self.on_start_submission)
        app.view(REJECT_MODAL_CALLBACK)(self.on_reject_submission)
        app.action(ActionId.APPROVE.value)(self.on_approve)
        app.action(ActionId.REJECT.value)(self.on_reject)
        app.action(ActionId.RETRY.value)(self.on_retry)
        app.action(ActionId.ABORT.value)(self.on_abort)
        app.action(ActionId.RESEND.value)(self.on_resend)
        self.follow_ups.register(app)

    def _reply(self, url: str | None, client: AsyncWebClient) -> Reply:
        return Reply(url, client.session)

    async def _actor(self, person: Person, reply: Reply) -> Actor | None:
        """The authorised actor, or None once the person has been told why not."""
        try:
            return await person.actor()
        except PeopleLookupFailed as failed:
            await reply(f":no_entry: Refused: who may approve could not be checked. "
                        f"{escape(failed)}")
            return None

    # --- the slash command ------------------------------------------------------------------

    async def on_command(self, ack: Any, body: dict[str, Any], context: dict[str, Any],
                         client: AsyncWebClient) -> None:
        text = (body.get("text") or "").strip()
        word = text.split(maxsplit=1)[0].lower() if text else "help"
        if word == "help":
            await ack(text=blocks.help_text(), response_type="ephemeral")
            return
        if word not in ANYWHERE and not is_rollback_channel(
                self.settings, body.get("channel_id", ""), body.get("channel_name", "")):
            wanted = self.settings.rollback_channel.strip().lstrip("#")
            where = f"<#{wanted}>" if is_channel_id(wanted) else f"#{wanted}"
            await ack(text=f"Rollbacks run only in {where}.", response_type="ephemeral")
            return
        await ack()
        person: Person = context["person"]
        reply = self._reply(body.get("response_url"), client)
        if word in ("status", "plan", "check", "escalate"):
            why = text[len(word):].strip()
            self.background.spawn(self._report(word, person, reply, why), f"{COMMAND} {word}",
                                  reply)
        else:
            self.background.start_now(self._open_start_modal(body, person, reply, client),
                                      f"{COMMAND} start", reply)

    async def _report(self, word: str, person: Person, reply: Reply, why: str = "") -> None:
        actor = await self._actor(person, reply)
        if actor is None:
            return
        if not actor.authorised:
            await reply(NOT_AUTHORISED)
            return
        if word == "status":
            text = escape(await status_text(self.engine))
            active = await self.engine.active_run_id()
            if active is not None and self.redraw_board is not None:
                await self.redraw_board(active)
        elif word == "plan":
            text = escape(dry_run_text(self.settings, await self.engine.dry_run_report()))
        elif word == "escalate":
            await self.follow_ups.escalate_command(actor, why, reply)
            return
        else:
            from bot.preflight import preflight_text

            text = escape(await preflight_text(self.settings))
        await reply(clip(text, REPLY_LIMIT))

    async def _open_start_modal(self, body: dict[str, Any], person: Person, reply: Reply,
                                client: AsyncWebClient) -> None:
        """Open the modal first (a loading view), then check, then show the form or why not."""
        try:
            opened = await client.views_open(trigger_id=body["trigger_id"],
                                             view=modal.loading_modal())
        except SlackApiError as exc:
            if exc.response.get("error") not in TRIGGER_LOST:
                raise
            await reply(":hourglass: Slack's 3 seconds to open the rollback form passed before "
                        "the bot could open it (Slack or the bot is slow right now). Run the "
                        "command again.")
            return
        view_id, view_hash = opened["view"]["id"], opened["view"].get("hash")
        refusal = await self._start_refusal(person)
        if refusal is not None:
            view = modal.refusal_modal(refusal)
        else:
            origin = Origin(body.get("channel_id", ""), body.get("response_url"))
            view = modal.start_modal((body.get("text") or "").strip(), origin)
        await client.views_update(view_id=view_id, hash=view_hash, view=view)

    async def _start_refusal(self, person: Person) -> str | None:
        """Why this person may not start a rollback now (mrkdwn), or None."""
        try:
            actor = await person.actor()
            authorised = await self.engineers.authorised()
        except PeopleLookupFailed as failed:
            return f"Refused: who may approve could not be checked. {escape(failed)}"
        if not actor.authorised:
            return NOT_AUTHORISED
        active = await self.engine.active_run_id()
        if active is not None:
            view = await self.engine.run_view(active)
            return "A rollback is already active: " + thread_link(view.channel_id,
                                                                   view.thread_ts)
        eligible = eligible_approvers(authorised, actor.user_id, self.settings.allow_self_approval)
        if len(eligible) < APPROVALS_NEEDED:
            return (f"Refused: every step needs {APPROVALS_NEEDED} approvals from engineers "
                    f"other than you, and only {len(eligible)} are authorised.")
        return None

    async def on_start_submission(self, ack: Any, body: dict[str, Any], view: dict[str, Any],
                                  context: dict[str, Any], client: AsyncWebClient) -> None:
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
        origin = Origin.parse(view.get("private_metadata") or "")
        reply = self._reply(origin.response_url, client)
        self.background.spawn(self._start(context["person"], origin, reason, reply),
                              "start submission", reply)

    async def _start(self, person: Person, origin: Origin, reason: str, reply: Reply) -> None:
        actor = await self._actor(person, reply)
        if actor is None:
            return
        channel_id = origin.subject or self.settings.rollback_channel
        answer = await self.engine.start_run(actor, reason, channel_id)
        if not answer.accepted:
            await self._refuse(reply, answer)

    # --- buttons ----------------------------------------------------------------------------

    async def _refuse(self, reply: Reply, answer: Answer) -> None:
        text = f":no_entry: Refused: {escape(answer.message)}"
        if answer.run_id and answer.refusal is Refusal.ANOTHER_RUN_ACTIVE:
            view = await self.engine.run_view(answer.run_id)
            text += " " + thread_link(view.channel_id, view.thread_ts)
        await reply(text)

    async def _receive(self, person: Person, action: str, value: str,
                       reason: str | None = None) -> int | None:
        """Record the click in the engine's inbox — before Slack is told OK, so an
        acknowledged click survives a crash right after the ack. None: not a button of ours."""
        try:
            button = ButtonValue.parse(value)
        except ValueError:
            return None
        return await self.engine.accept_click(ReceivedClick(
            ClickAction(action), person.user_id, person.user_name, Source.SLACK,
            button.run_id, button.execution_id, button.fingerprint, reason))

    async def _process(self, inbox_id: int | None, person: Person, reply: Reply) -> None:
        """Do the recorded click and tell the clicker if it was refused."""
        if inbox_id is None:
            await reply(":no_entry: Refused: this button is not recognised.")
            return
        try:
            authorised = (await person.actor()).authorised
        except PeopleLookupFailed as failed:
            # Consumed as refused, so it is not done later without the person knowing.
            await self.engine.process_click(inbox_id, False)
            await reply(f":no_entry: Refused: who may approve could not be checked. "
                        f"{escape(failed)}")
            return
        answer = await self.engine.process_click(inbox_id, authorised)
        if answer is not None and not answer.accepted:  # None: another replica did it
            await self._refuse(reply, answer)

    async def _handle(self, ack: Any, body: dict[str, Any], context: dict[str, Any],
                      client: AsyncWebClient, action: str) -> None:
        person: Person = context["person"]
        actions = body.get("actions") or [{}]
        inbox_id = await self._receive(person, action, str(actions[0].get("value", "")))
        await ack()
        reply = self._reply(body.get("response_url"), client)
        self.background.spawn(self._process(inbox_id, person, reply), f"{action} click", reply)

    async def on_approve(self, ack: Any, body: dict[str, Any], context: dict[str, Any],
                         client: AsyncWebClient) -> None:
        await self._handle(ack, body, context, client, "approve")

    async def on_retry(self, ack: Any, body: dict[str, Any], context: dict[str, Any],
                       client: AsyncWebClient) -> None:
        await self._handle(ack, body, context, client, "retry")

    async def on_abort(self, ack: Any, body: dict[str, Any], context: dict[str, Any],
                       client: AsyncWebClient) -> None:
        await self._handle(ack, body, context, client, "abort")

    async def on_resend(self, ack: Any, body: dict[str, Any], context: dict[str, Any],
                        client: AsyncWebClient) -> None:
        await self._handle(ack, body, context, client, "resend")

    async def on_reject(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Reject asks why in a modal (opened at once: the trigger_id lasts 3 s); the run stops
        when the reason is submitted."""
        await ack()
        reply = self._reply(body.get("response_url"), client)
        self.background.start_now(self._ask_why(body, reply, client), "reject click", reply)

    async def _ask_why(self, body: dict[str, Any], reply: Reply, client: AsyncWebClient
                       ) -> None:
        origin = Origin(body["actions"][0]["value"], body.get("response_url"))
        try:
            await client.views_open(trigger_id=body["trigger_id"], view=modal.reject_modal(origin))
        except SlackApiError as exc:
            if exc.response.get("error") not in TRIGGER_LOST:
                raise
            await reply(":hourglass: Slack's 3 seconds to open the reject form passed; press "
                        "Reject again.")

    async def on_reject_submission(self, ack: Any, body: dict[str, Any], view: dict[str, Any],
                                   context: dict[str, Any], client: AsyncWebClient) -> None:
        reason = modal.parse_reject_submission(view["state"]["values"])
        if not reason:
            await ack(response_action="errors", errors={modal.REJECT_BLOCK: "Say why."})
            return
        origin = Origin.parse(view.get("private_metadata") or "")
        person: Person = context["person"]
        inbox_id = await self._receive(person, "reject", origin.subject, reason)
        await ack()
        reply = self._reply(origin.response_url, client)
        self.background.spawn(self._process(inbox_id, person, reply), "reject submission",
                              reply)
