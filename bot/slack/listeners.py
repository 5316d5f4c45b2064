"""Thin Bolt listeners: ack at once, parse a typed payload, hand over to the engine.

Each listener answers Slack first and leaves the rest — the engine call, the reply — to
`Background`, so the ack never waits on the database or the Web API. What needs nothing else
(help, a command typed outside the rollback channel, a modal's validation errors) is answered
in the ack itself; everything later goes by the request's `response_url` (`Reply`), which
reaches the person in DMs and in channels the bot is not in, where `chat.postEphemeral` fails.
The start modal opens first of all, before any check, within the `trigger_id`'s 3 seconds.
No step work happens here. The acting user comes from `person_middleware` (people.py).

One front serves every target (`served_targets.py`): a command names its target, a click is
routed to the engine of its run's target, and whether the person may act is asked of that
target's approvers.
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
from bot.engine.engine import Actor, Answer, ClickAction, ReceivedClick
from bot.engine.reports import status_text
from bot.settings import SettingsError
from bot.slack import blocks, modal
from bot.slack.actions import START_MODAL_CALLBACK, ActionId, ButtonValue
from bot.slack.background import Background
from bot.slack.command_text import CommandText, parse_command
from bot.slack.follow_up_listeners import FollowUpListeners
from bot.slack.modal import REJECT_MODAL_CALLBACK, Origin
from bot.slack.mrkdwn import clip, escape
from bot.slack.people import (
    PeopleLookupFailed,
    Person,
    is_channel_id,
    is_rollback_channel,
)
from bot.slack.replies import Reply
from bot.slack.served_targets import ServedTarget, ServedTargets

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
    def __init__(self, targets: ServedTargets, background: Background,
                 redraw_board: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.targets = targets
        # `status` draws the board again and re-homes a lost thread (the mirror's job).
        self.redraw_board = redraw_board
        self.settings = targets.first.settings  # bot-wide settings (the channel) are shared
        self.background = background
        for target in targets.served:  # for clicks after a restart, each its own approvers
            target.engine.authorise_with(self._authorised_or_refused(target))
        self.follow_ups = FollowUpListeners(targets, background)

    @staticmethod
    def _authorised_or_refused(target: ServedTarget) -> Callable[[str], Awaitable[bool]]:
        """A click processed after a restart, when who may approve cannot be read: refused."""
        async def authorised(user_id: str) -> bool:
            try:
                return await target.engineers.is_authorised(user_id)
            except PeopleLookupFailed as failed:
                log.warning("click of %s refused: %s", user_id, failed)
                return False
        return authorised

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

    async def _actor(self, person: Person, reply: Reply, target: ServedTarget
                     ) -> Actor | None:
        """The actor, authorised or not on `target`, or None once the person has been told
        that it could not be checked."""
        try:
            return await person.actor(target.engineers)
        except PeopleLookupFailed as failed:
            await reply(f":no_entry: Refused: who may approve could not be checked. "
                        f"{escape(failed)}")
            return None

    # --- the slash command ------------------------------------------------------------------

    async def on_command(self, ack: Any, body: dict[str, Any], context: dict[str, Any],
                         client: AsyncWebClient) -> None:
        command = parse_command(body.get("text") or "", self.targets.names,
                                self.targets.named)
        if command.word == "help":
            await ack(text=blocks.help_text(self.targets.names if self.targets.named else ()),
                      response_type="ephemeral")
            return
        if command.word not in ANYWHERE and not is_rollback_channel(
                self.settings, body.get("channel_id", ""), body.get("channel_name", "")):
            wanted = self.settings.rollback_channel.strip().lstrip("#")
            where = f"<#{wanted}>" if is_channel_id(wanted) else f"#{wanted}"
            await ack(text=f"Rollbacks run only in {where}.", response_type="ephemeral")
            return
        refusal = command.error or self._target_refusal(command)
        if refusal is not None:
            await ack(text=f":no_entry: {refusal}", response_type="ephemeral")
            return
        await ack()
        person: Person = context["person"]
        reply = self._reply(body.get("response_url"), client)
        if command.word == "start":
            self.background.start_now(
                self._open_start_modal(body, command, person, reply, client),
                f"{COMMAND} start", reply)
        else:
            self.background.spawn(self._report(command, person, reply),
                                  f"{COMMAND} {command.word}", reply)

    def _target_refusal(self, command: CommandText) -> str | None:
        """Why the target named (or the only one) cannot be used: unknown, or refused for its
        settings (what is missing); None for status and check over every target."""
        if command.target is None and command.word in ("status", "check") \
                and self.targets.several:
            return None
        try:
            self.targets.get(command.target)
        except SettingsError as exc:
            return escape(str(exc))
        return None

    def _targets_asked(self, command: CommandText) -> tuple[ServedTarget, ...]:
        if command.target is None and self.targets.several:
            return tuple(self.targets.served)
        return (self.targets.get(command.target),)

    async def _report(self, command: CommandText, person: Person, reply: Reply) -> None:
        parts = []
        for target in self._targets_asked(command):
            actor = await self._actor(person, reply, target)
            if actor is None:
                return
            if not actor.authorised:
                parts.append(self._not_authorised(target))
                continue
            if command.word == "escalate":
                await self.follow_ups.escalate_command(target, actor, command.rest, reply)
                return
            parts.append(await self._report_on(command.word, target))
        if command.target is None and self.targets.several:
            parts += [f"target {name} is refused: {why}"
                      for name, why in self.targets.refused.items()]
        await reply(clip("\n\n".join(parts), REPLY_LIMIT))

    def _not_authorised(self, target: ServedTarget) -> str:
        if not self.targets.named:
            return NOT_AUTHORISED
        return (f"You are not an authorised engineer for rollbacks on {target.name} "
                f"({target.name.upper()}__APPROVER_USER_IDS / APPROVER_USERGROUP_ID).")

    async def _report_on(self, word: str, target: ServedTarget) -> str:
        engine = target.engine
        heading = f"*{target.name}*\n" if self.targets.several else ""
        if word == "status":
            text = await status_text(engine)
            active = await engine.active_run_id()
            if active is not None and self.redraw_board is not None:
                await self.redraw_board(active)
        elif word == "plan":
            text = dry_run_text(target.settings, await engine.dry_run_report())
        else:
            from bot.preflight import preflight_text

            text = await preflight_text(target.settings)
        return heading + escape(text)

    async def _open_start_modal(self, body: dict[str, Any], command: CommandText,
                                person: Person, reply: Reply, client: AsyncWebClient) -> None:
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
        target = self.targets.get(command.target)
        refusal = await self._start_refusal(person, target)
        if refusal is not None:
            view = modal.refusal_modal(refusal)
        else:
            origin = Origin(body.get("channel_id", ""), body.get("response_url"),
                            target.name if self.targets.named else None)
            choices = tuple(t.name for t in self.targets.served) if self.targets.several \
                else ()
            view = modal.start_modal(command.rest, origin, choices)
        await client.views_update(view_id=view_id, hash=view_hash, view=view)

    async def _start_refusal(self, person: Person, target: ServedTarget) -> str | None:
        """Why this person may not start a rollback on `target` now (mrkdwn), or None."""
        refusal = await self._two_person_refusal(person, target)
        if refusal is not None:
            return refusal
        active = await target.engine.active_run_id()
        if active is not None:
            view = await target.engine.run_view(active)
            return f"A rollback{target.label} is already active: " + thread_link(
                view.channel_id, view.thread_ts)
        return None

    async def _two_person_refusal(self, person: Person, target: ServedTarget) -> str | None:
        """The two-person rule on the target's own approvers: the person is one of them, and
        two others could approve."""
        try:
            actor = await person.actor(target.engineers)
            authorised = await target.engineers.authorised()
        except PeopleLookupFailed as failed:
            return f"Refused: who may approve could not be checked. {escape(failed)}"
        if not actor.authorised:
            return self._not_authorised(target)
        eligible = eligible_approvers(authorised, actor.user_id,
                                      target.settings.allow_self_approval)
        if len(eligible) < APPROVALS_NEEDED:
            return (f"Refused: every step{target.label} needs {APPROVALS_NEEDED} approvals "
                    f"from engineers other than you, and only {len(eligible)} are "
                    f"authorised{' there' if target.label else ''}.")
        return None

    async def on_start_submission(self, ack: Any, body: dict[str, Any], view: dict[str, Any],
                                  context: dict[str, Any], client: AsyncWebClient) -> None:
        values = view["state"]["values"]
        reason, acknowledged = modal.parse_start_submission(values)
        origin = Origin.parse(view.get("private_metadata") or "")
        chosen = modal.parse_target_choice(values)
        target: ServedTarget | None = None
        errors = {}
        try:
            target = self.targets.get(chosen if chosen is not None else origin.target)
        except SettingsError as exc:
            errors[modal.TARGET_BLOCK_ID if chosen is not None else modal.REASON_BLOCK_ID] = \
                clip(str(exc), 2000)
        if not acknowledged:
            errors[modal.ACK_BLOCK_ID] = "Acknowledge that this rollback is LOSSY."
        if not reason:
            errors[modal.REASON_BLOCK_ID] = "Say why you are rolling back."
        if errors or target is None:
            await ack(response_action="errors", errors=errors)
            return
        await ack()
        reply = self._reply(origin.response_url, client)
        self.background.spawn(self._start(context["person"], origin, target, reason, reply),
                              "start submission", reply)

    async def _start(self, person: Person, origin: Origin, target: ServedTarget, reason: str,
                     reply: Reply) -> None:
        """The two-person rule is asked again of the target submitted: the select may name
        another target than the command did."""
        refusal = await self._two_person_refusal(person, target)
        if refusal is not None:
            await reply(f":no_entry: {refusal}")
            return
        actor = await self._actor(person, reply, target)
        if actor is None:
            return
        channel_id = origin.subject or self.settings.rollback_channel
        answer = await target.engine.start_run(actor, reason, channel_id)
        if not answer.accepted:
            await self._refuse(reply, answer, target)

    # --- buttons ----------------------------------------------------------------------------

    async def _refuse(self, reply: Reply, answer: Answer, target: ServedTarget) -> None:
        text = f":no_entry: Refused{target.label}: {escape(answer.message)}"
        if answer.run_id and answer.refusal is Refusal.ANOTHER_RUN_ACTIVE:
            view = await target.engine.run_view(answer.run_id)
            text += " " + thread_link(view.channel_id, view.thread_ts)
        await reply(text)

    async def _receive(self, person: Person, action: str, value: str,
                       reason: str | None = None) -> tuple[int, str] | None:
        """Record the click in the engine's inbox — before Slack is told OK, so an
        acknowledged click survives a crash right after the ack; (inbox id, its run). None:
        not a button of ours."""
        try:
            button = ButtonValue.parse(value)
        except ValueError:
            return None
        inbox_id = await self.targets.first.engine.accept_click(ReceivedClick(
            ClickAction(action), person.user_id, person.user_name, Source.SLACK,
            button.run_id, button.execution_id, button.fingerprint, reason))
        return inbox_id, button.run_id

    async def _process(self, received: tuple[int, str] | None, person: Person, reply: Reply
                       ) -> None:
        """Do the recorded click on its run's target — that target's engine, whether the
        person may approve there — and tell the clicker if it was refused."""
        if received is None:
            await reply(":no_entry: Refused: this button is not recognised.")
            return
        inbox_id, run_id = received
        target = await self.targets.of_run(run_id) or self.targets.first
        try:
            authorised = (await person.actor(target.engineers)).authorised
        except PeopleLookupFailed as failed:
            # Consumed as refused, so it is not done later without the person knowing.
            await target.engine.process_click(inbox_id, False)
            await reply(f":no_entry: Refused: who may approve could not be checked. "
                        f"{escape(failed)}")
            return
        answer = await target.engine.process_click(inbox_id, authorised)
        if answer is not None and not answer.accepted:  # None: another replica did it
            await self._refuse(reply, answer, target)

    async def _handle(self, ack: Any, body: dict[str, Any], context: dict[str, Any],
                      client: AsyncWebClient, action: str) -> None:
        person: Person = context["person"]
        actions = body.get("actions") or [{}]
        received = await self._receive(person, action, str(actions[0].get("value", "")))
        await ack()
        reply = self._reply(body.get("response_url"), client)
        self.background.spawn(self._process(received, person, reply), f"{action} click", reply)

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
        received = await self._receive(person, "reject", origin.subject, reason)
        await ack()
        reply = self._reply(origin.response_url, client)
        self.background.spawn(self._process(received, person, reply), "reject submission",
                              reply)
