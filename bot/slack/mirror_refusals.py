"""What the mirror does when Slack refuses a write for good (retrying would freeze the thread).

- A deleted step message is posted again.
- A lost thread (its root deleted, or the thread not found) gets a new root in the channel that
  says "the rollback continues here" and links back; every step message is posted under it.
- A channel the bot cannot write (not in it, gone, archived), or a token Slack refuses, makes
  the thread unwritable: the initiator is told by a direct message, and the run is stopped at
  its next approval point (nobody could approve in a thread nobody sees), so it never stays
  "active", refusing every new start, because Slack refused a write.
- A drawing Slack refuses (invalid_blocks, msg_too_long) is sent once more as plain text.

Each refusal is recorded in `slack_refusals`, with what was done about it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.db import repo_mirror
from bot.domain.events import Source
from bot.domain.states import RETRYABLE_STEP_STATUSES, RunStatus, StepStatus
from bot.domain.views import RunView
from bot.engine.engine import Actor, Click
from bot.slack.slack_errors import Failure
from bot.slack.thread_schedule import Action, NextWrite, ThreadSnapshot
from bot.slack.thread_writer import permalink

if TYPE_CHECKING:
    from bot.slack.mirror import ThreadMirror

log = logging.getLogger(__name__)

BOT = Actor("bot", "rollback-bot", Source.BOT, authorised=True)
METHODS = {Action.POST_ROOT: "chat.postMessage", Action.POST_STEP: "chat.postMessage",
           Action.EDIT: "chat.update", Action.SUMMARY: "chat.postMessage",
           Action.UPLOAD_OUTPUT: "files.completeUploadExternal"}
STOPPABLE = RETRYABLE_STEP_STATUSES | {StepStatus.AWAITING_APPROVAL}


class Refusals:
    def __init__(self, mirror: ThreadMirror) -> None:
        self.mirror = mirror
        self.engine = mirror.engine

    async def _record(self, run_id: str, method: str, error: str, what: str,
                      handled: str) -> None:
        log.error("run %s: Slack refused %s (%s): %s", run_id, method, error, handled)
        async with self.engine.sessions() as session, session.begin():
            await repo_mirror.record_refusal(session, run_id, method, error, what, handled)

    async def handle(self, snapshot: ThreadSnapshot, write: NextWrite, failure: Failure,
                     error: str, plain: bool) -> None:
        view = snapshot.view
        method = METHODS.get(write.action, str(write.action))
        what = f"{write.action.value} {write.key}"
        is_board = write.step is None and write.action in (Action.EDIT, Action.POST_ROOT)
        if failure is Failure.MESSAGE_GONE and write.action is Action.EDIT and not is_board:
            assert write.step is not None and write.step.execution_id and write.ts
            async with self.engine.sessions() as session, session.begin():
                await repo_mirror.forget_message(session, write.step.execution_id, write.ts)
                await repo_mirror.record_refusal(session, view.run_id, method, error, what,
                                                 "the step message is posted again")
            self.mirror.forget_drawn(view.run_id, write.key)
        elif failure in (Failure.MESSAGE_GONE, Failure.THREAD_GONE):
            await self.rehome(view, self.mirror.channel_of(view), method, error)
        elif failure in (Failure.CHANNEL_REFUSED, Failure.AUTH):
            await self.unwritable(view, method, error, what)
        elif failure is Failure.CONTENT_REFUSED and not plain \
                and write.action is not Action.UPLOAD_OUTPUT:
            await self._record(view.run_id, method, error, what, "sent again as plain text")
            await self.mirror.perform(snapshot, write, plain=True)
        elif write.action is Action.POST_ROOT:  # refused even plainly: no thread can exist
            await self.unwritable(view, method, error, what)
        else:  # refused even plainly, or a file Slack will not take: skip it, never loop
            await self._record(view.run_id, method, error, what, "skipped")
            if write.action is Action.EDIT:
                self.mirror.record_drawn(view.run_id, write)
            elif write.entry is not None:
                await self.mirror.advance(view.run_id, write.entry.event_id)
            else:
                self.mirror.set_aside(write.key)

    async def rehome(self, view: RunView, channel: str, method: str, error: str) -> None:
        """A new root in `channel`, linking back to the thread that was lost."""
        old = permalink(view.channel_id, view.thread_ts) \
            if view.channel_id and view.thread_ts else ""
        async with self.engine.sessions() as session, session.begin():
            await repo_mirror.rehome(session, view.run_id, channel)
            await repo_mirror.record_refusal(
                session, view.run_id, method, error, old,
                f"{repo_mirror.REHOMED}: a new root in {channel}")
        self.mirror.moved_from[view.run_id] = old or None
        self.mirror.writes.forget(view.run_id)
        self.mirror.forget_drawn(view.run_id)
        self.mirror.unwritable.pop(view.run_id, None)

    async def unwritable(self, view: RunView, method: str, error: str, what: str) -> None:
        channel = self.mirror.channel_of(view)
        told = await self.mirror.writes.tell_initiator(view, (
            f":warning: The Phase 3 rollback you started (run `{view.run_id}`) cannot write "
            f"its Slack thread: Slack answered `{error}` for <#{channel}>. Invite the bot there "
            "(`/invite @rollback-bot`) and type `/rollback-phase3 status` to move the thread "
            "back. Until then the rollback stops at its next approval: a running step finishes "
            "first; nothing else is done."))
        await self._record(view.run_id, method, error, what,
                           f"{repo_mirror.UNWRITABLE}: the initiator "
                           + ("was told by a direct message" if told else "could not be told"))
        self.mirror.unwritable[view.run_id] = error

    async def stop_if_stuck(self, run_id: str) -> bool:
        """A run whose thread cannot be written is stopped where it would wait for people who
        cannot see it; a running step finishes first. True while it must be looked at again."""
        view = await self.engine.run_view(run_id)
        if view.status is not RunStatus.ACTIVE:
            await self.mirror.claims.done(run_id)
            return False
        waiting = next((s for s in reversed(view.steps)
                        if s.execution_id and s.status in STOPPABLE), None)
        if waiting is None or waiting.execution_id is None:
            return True  # a step is running: the engine never waits on Slack
        reason = (f"stopped by the bot: Slack refused its thread "
                  f"({self.mirror.unwritable.get(run_id, 'refused')})")
        answer = await self.mirror.engine_for(view.target).abort(
            Click(BOT, run_id, waiting.execution_id,
                  waiting.plan.fingerprint if waiting.plan else ""), reason)
        if answer.accepted:
            await self._record(run_id, "-", self.mirror.unwritable.get(run_id, "refused"),
                               f"{waiting.step} attempt {waiting.attempt}",
                               "the run was stopped (nobody could approve it)")
        return not answer.accepted

    async def rehome_if_lost(self, run_id: str) -> None:
        """For `/rollback-phase3 status`: a thread that could not be written is tried again,
        under a new root in its channel (the bot may have been invited back)."""
        async with self.engine.sessions() as session:
            _, stuck = await repo_mirror.thread_state(session, run_id)
        if stuck is None:
            return
        view = await self.engine.run_view(run_id)
        await self.rehome(view, self.mirror.channel_of(view), "-", stuck)
