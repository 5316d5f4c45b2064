"""The terminal as a second front to the engine: the rehearsal, and the break-glass path when
Slack is down.

Like the Slack mirror, it is a view of the incident log: when the engine says a run changed, it
reads the entries after its cursor and prints each exactly once, in log order. Approvals come
from an `ApprovalSource` (names given on the command line, or people typing at a prompt) and are
recorded with the source "terminal" and the names given.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TextIO

from bot.db import repo_events
from bot.domain.approvals import Refusal
from bot.domain.events import Source
from bot.domain.states import FINAL_RUN_STATUSES, RETRYABLE_STEP_STATUSES, StepStatus
from bot.domain.steps import StepName
from bot.domain.views import RunView, StepView
from bot.engine.engine import Actor, Answer, Click, Engine
from bot.terminal.decisions import ApprovalSource, FrontError
from bot.terminal.render import entry_of, render_entry, status_board, step_heading

if TYPE_CHECKING:
    from bot.terminal.identity import TotpIdentity

POLL_SECONDS = 1.0  # a safety net only: the engine's change notice normally wakes us first


ActorFor = Callable[[str], Actor]


def terminal_actor(name: str) -> Actor:
    """A rehearsal's engineer: any name, on a sandbox nobody else uses."""
    return Actor(f"terminal:{name}", name, Source.TERMINAL, True)


def configured_actor(approver_ids: tuple[str, ...]) -> ActorFor:
    """Break-glass on the real target: the names given are user ids, and only those configured
    (APPROVER_USER_IDS) are authorised — the same engineers, and the same two-person rule, as in
    Slack (an approval given in Slack and one at the terminal by the same id count once)."""
    def actor(user_id: str) -> Actor:
        return Actor(user_id, user_id, Source.TERMINAL, user_id in approver_ids)
    return actor


class TerminalFront:
    def __init__(self, engine: Engine, out: TextIO, approvals: ApprovalSource,
                 actor_for: ActorFor = terminal_actor, operator: str | None = None,
                 identity: TotpIdentity | None = None) -> None:
        self.engine = engine
        self.identity = identity  # break-glass: every approval proven by its engineer's code
        self.out = out
        self.approvals = approvals
        self.actor_for = actor_for
        self.operator = operator  # who retries or aborts from this terminal
        self._wake = asyncio.Event()
        self._cursor = 0
        self._decided: set[tuple[str, str]] = set()  # (execution id, fingerprint) handled
        engine.subscribe(self._notify)

    def _notify(self, run_id: str) -> None:
        self._wake.set()

    def say(self, *lines: str) -> None:
        for line in lines:
            print(line, file=self.out, flush=True)

    async def run(self, initiator: str, reason: str, channel_id: str | None = None) -> RunView:
        """Start a rollback and drive it to its end; returns the final view. At break-glass
        the initiator types their own code first."""
        answer = await self.act_as(initiator, "start the rollback",
                                   lambda actor: self.engine.start_run(actor, reason, channel_id))
        if answer is None:
            raise FrontError(f"start by {initiator} refused: no valid code")
        if not answer.accepted or answer.run_id is None:
            raise FrontError(answer.message)
        return await self.follow(answer.run_id)

    async def follow(self, run_id: str) -> RunView:
        """Print the log as it grows and hand each waiting step to the approval source."""
        while True:
            self._wake.clear()
            await self.print_new(run_id)
            view = await self.engine.run_view(run_id)
            if view.status in FINAL_RUN_STATUSES:
                await self.engine.wait_idle()
                await self.print_new(run_id)
                view = await self.engine.run_view(run_id)
                if await self._offer_resend(view):
                    continue  # the resend runs: its end is printed, then asked again if need be
                self.say("", *status_board(view))
                return view
            current = _current_step(view)
            if current is not None and await self._act(view, current):
                continue  # we changed something: read the log again at once
            with contextlib.suppress(TimeoutError):  # not wait_for: see ThreadMirror._loop
                async with asyncio.timeout(POLL_SECONDS):
                    await self._wake.wait()

    async def print_new(self, run_id: str) -> None:
        while True:
            async with self.engine.sessions() as session:
                events = await repo_events.events_after(session, run_id, self._cursor, limit=500)
            if not events:
                return
            view = await self.engine.run_view(run_id)
            for event in events:
                entry = entry_of(event)
                self.say(*render_entry(entry, view))
                self._cursor = entry.id

    async def _act(self, view: RunView, step: StepView) -> bool:
        assert step.execution_id is not None
        if step.status is StepStatus.AWAITING_APPROVAL and step.plan is not None:
            key = (step.execution_id, step.plan.fingerprint)
            if key in self._decided:
                return False
            self._decided.add(key)
            verdict = await self.approvals.verdict(view, step)
            if verdict.reject_reason is not None:
                name = verdict.approvers[0] if verdict.approvers else "terminal"
                reason = verdict.reject_reason
                refused = await self.act_as(name, f"reject {step_heading(step.step)}",
                                         lambda actor: self.engine.reject(
                                             self._click(actor, view, step), reason))
                if refused is not None:
                    self._decided.discard(key)
                return True
            already = {a.user_id for a in step.approvers if not a.expired}  # one person
            for name in verdict.approvers:
                if self.actor_for(name).user_id in already:
                    continue
                answer = await self.act_as(name, f"approve {step_heading(step.step)}",
                                        lambda actor: self.engine.approve(
                                            self._click(actor, view, step)))
                if answer is None:  # the code was wrong or used: nothing was recorded
                    if not self.approvals.interactive:
                        raise FrontError(f"approval by {name} refused: no valid code")
                    self._decided.discard(key)
                    break
                if not answer.accepted:
                    self.say(f"  {name}: {answer.message}")
                    if answer.refusal is Refusal.PLAN_CHANGED:
                        break  # the new plan has a new fingerprint: it is asked for afresh
                    if not self.approvals.interactive:
                        raise FrontError(f"approval by {name} refused: {answer.message}")
                    self._decided.discard(key)  # ask the people at the keyboard again
                    break
            return True
        if step.status in RETRYABLE_STEP_STATUSES:
            key = (step.execution_id, "after-failure")
            if key in self._decided:
                return False
            self._decided.add(key)
            name = self.operator or view.initiator_name
            heading = step_heading(step.step)
            retry = await self.approvals.after_failure(view, step)
            what = f"retry {heading}" if retry else f"abort at {heading}"
            why = f"{heading} {step.status.value if step.status else ''}; aborted at the terminal"

            async def act(actor: Actor) -> Answer:
                click = self._click(actor, view, step)
                return await (self.engine.retry(click) if retry else
                              self.engine.abort(click, why))

            answer = await self.act_as(name, what, act)
            if answer is None:  # the code was wrong or used: nothing was done
                if not self.approvals.interactive:
                    raise FrontError(f"{what} by {name} refused: no valid code")
                self._decided.discard(key)  # asked again
                return True
            if not answer.accepted:
                self.say(f"  {answer.message}")
            return True
        return False

    async def _offer_resend(self, view: RunView) -> bool:
        """A run that ended with unconfirmed deliveries: the people here may resend (two
        approvals, each a Resend click as in Slack)."""
        step = next(s for s in view.steps if s.step is StepName.EMAIL_CLIENTS)
        resend = step.resend
        if resend is None or not resend.offered or step.execution_id is None \
                or (resend.fingerprint, "resend") in self._decided:
            return False
        self._decided.add((resend.fingerprint, "resend"))
        names = await self.approvals.resend(view, step)
        execution_id = step.execution_id
        for name in names:
            answer = await self.act_as(name, "resend", lambda actor: self.engine.resend(
                Click(actor, view.run_id, execution_id, resend.fingerprint)))
            if answer is None:
                return False
            if not answer.accepted:
                self.say(f"  {name}: {answer.message}")
                return False
        return bool(names)

    async def act_as(self, name: str, what: str,
                  act: Callable[[Actor], Awaitable[Answer]]) -> Answer | None:
        """Do `act` as `name`: at break-glass only once they typed their own unused code (None
        when they did not: said here, nothing recorded)."""
        if self.identity is None:
            return await act(self.actor_for(name))
        from bot.terminal.identity import IdentityRefused

        try:
            async with self.identity.proven(name, what) as proven:
                actor = self.actor_for(name)
                return await act(Actor(actor.user_id, actor.user_name, actor.source,
                                       actor.authorised, totp_step=proven.totp_step))
        except IdentityRefused as exc:
            self.say(f"  ✖ {exc}")
            return None

    @staticmethod
    def _click(actor: Actor, view: RunView, step: StepView) -> Click:
        assert step.execution_id is not None
        fingerprint = step.plan.fingerprint if step.plan else ""
        return Click(actor, view.run_id, step.execution_id, fingerprint)


def _current_step(view: RunView) -> StepView | None:
    """The step that needs people: waiting for approval, or failed and waiting for a decision."""
    for step in view.steps:
        if step.status is StepStatus.AWAITING_APPROVAL or step.status in RETRYABLE_STEP_STATUSES:
            return step
    return None
