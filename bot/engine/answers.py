"""What fronts hand the engine (who acted, on which button) and what it hands back."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.domain.approvals import REFUSAL_TEXT, Refusal
from bot.domain.events import Source


@dataclass(frozen=True)
class Actor:
    user_id: str
    user_name: str
    source: Source
    authorised: bool
    # Break-glass at a terminal: the TOTP time step of the code this engineer typed; written
    # into the log entry of what they did, where the next use of the same code is refused.
    totp_step: int | None = None

    def proof(self) -> dict[str, object]:
        """What the log entry records of how this person was identified."""
        return {} if self.totp_step is None else {"proof": "totp", "totp_step": self.totp_step}


@dataclass(frozen=True)
class Click:
    """A button press (or its terminal equivalent) on one step execution."""

    actor: Actor
    run_id: str
    execution_id: str
    fingerprint: str = ""


@dataclass(frozen=True)
class Answer:
    """What the front tells the person who acted: accepted, or refused with a kind and why.

    Fronts decide on `refusal` (never on the words); `message` is for people.
    """

    accepted: bool
    message: str
    run_id: str | None = None
    refusal: Refusal | None = None

    @classmethod
    def refused(cls, refusal: Refusal, run_id: str | None = None,
                message: str | None = None) -> Answer:
        """`message`: the refusal's words for this case (default: its kind's)."""
        return cls(False, message or REFUSAL_TEXT[refusal], run_id=run_id, refusal=refusal)


class ClickAction(StrEnum):
    APPROVE = "approve"
    RETRY = "retry"
    ABORT = "abort"
    REJECT = "reject"
    RESEND = "resend"  # one approval of resending step 5's unconfirmed emails


@dataclass(frozen=True)
class ReceivedClick:
    """A click as it arrived, before anyone looked up whether its author may approve: what the
    inbox keeps before Slack is answered."""

    action: ClickAction
    user_id: str
    user_name: str
    source: Source
    run_id: str
    execution_id: str
    fingerprint: str = ""
    reason: str | None = None  # Reject's and Abort's reason
