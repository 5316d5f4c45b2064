"""Where the terminal's approvals come from: names given up front, or people at a prompt."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TextIO

from bot.domain.views import RunView, StepView
from bot.terminal.decisions import Verdict
from bot.terminal.render import step_heading


class NamedApprovers:
    """Two (or more) named engineers approve every step; a failed step ends the run.

    Used by the rehearsal: the names are recorded on every approval, as at a real incident.
    """

    interactive = False

    def __init__(self, names: Sequence[str], retries: int = 0) -> None:
        if len(set(names)) < 2:
            raise ValueError("two different approvers are needed (--approver NAME twice)")
        self.names = tuple(dict.fromkeys(names))
        self.retries_left = retries

    async def verdict(self, view: RunView, step: StepView) -> Verdict:
        return Verdict(approvers=self.names[: step.approvals_needed])

    async def after_failure(self, view: RunView, step: StepView) -> bool:
        if self.retries_left > 0:
            self.retries_left -= 1
            return True
        return False

    async def resend(self, view: RunView, step: StepView) -> tuple[str, ...]:
        return ()  # who may have had a key already is for people to decide, not a script


Ask = Callable[[str], str]


class PromptApprovers:
    """Engineers at the keyboard type their names: the break-glass path when Slack is down."""

    interactive = True

    def __init__(self, out: TextIO, ask: Ask = input) -> None:
        self.out = out
        self.ask = ask

    async def _ask(self, prompt: str) -> str:
        print(prompt, end="", file=self.out, flush=True)
        return (await asyncio.to_thread(self.ask, "")).strip()

    async def verdict(self, view: RunView, step: StepView) -> Verdict:
        names: list[str] = [a.user_name for a in step.approvers if not a.expired]
        while len(names) < step.approvals_needed:
            answer = await self._ask(
                f"  approval {len(names) + 1}/{step.approvals_needed} for "
                f"{step_heading(step.step)}{view.target_label} — your name (or 'reject'): ")
            if answer.lower() == "reject":
                who = await self._ask("  who rejects? ")
                why = await self._ask("  why? ")
                return Verdict(approvers=(who or "terminal",), reject_reason=why or "rejected")
            if not answer:
                continue
            if answer in names:
                print("  already approved by you: a second engineer must approve",
                      file=self.out)
                continue
            names.append(answer)
        return Verdict(approvers=tuple(names))

    async def after_failure(self, view: RunView, step: StepView) -> bool:
        while True:
            answer = (await self._ask(
                f"  {step_heading(step.step)} did not finish: 'retry' (two fresh approvals) or "
                "'abort'? ")).lower()
            if answer in ("retry", "abort"):
                return answer == "retry"

    async def resend(self, view: RunView, step: StepView) -> tuple[str, ...]:
        clients = step.resend.clients if step.resend else ()
        answer = (await self._ask(
            f"  {len(clients)} unconfirmed deliveries ({', '.join(clients)}): 'resend' "
            "(duplicates are possible; two approvals) or 'leave'? ")).lower()
        if answer != "resend":
            return ()
        names: list[str] = []
        while len(names) < 2:
            name = await self._ask(f"  resend approval {len(names) + 1}/2{view.target_label} "
                                   "— your name: ")
            if name and name not in names:
                names.append(name)
        return tuple(names)
