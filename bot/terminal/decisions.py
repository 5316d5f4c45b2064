"""What the people at a terminal decide about a step, and where those decisions come from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.domain.views import RunView, StepView


@dataclass(frozen=True)
class Verdict:
    """What the people at the terminal decided about one step."""

    approvers: tuple[str, ...] = ()
    reject_reason: str | None = None  # set: stop the run instead of approving


class ApprovalSource(Protocol):
    interactive: bool  # a refused approval is asked again (True) or ends the front (False)

    async def verdict(self, view: RunView, step: StepView) -> Verdict: ...

    async def after_failure(self, view: RunView, step: StepView) -> bool:
        """True: retry the step (two fresh approvals follow); False: abort the run."""
        ...

    async def resend(self, view: RunView, step: StepView) -> tuple[str, ...]:
        """Who approves resending to step 5's unconfirmed clients (duplicates are possible);
        none: leave them unconfirmed."""
        ...


class FrontError(Exception):
    """The engine refused to start or continue; the message says why."""
