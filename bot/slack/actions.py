"""Action ids and the value a button carries: one pydantic model, parsed in one place."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.domain.follow_ups import FollowUpItem

START_MODAL_CALLBACK = "rollback_start"


class ActionId(StrEnum):
    APPROVE = "step_approve"
    REJECT = "step_reject"
    RETRY = "step_retry"
    ABORT = "run_abort"
    RESEND = "email_resend"  # one approval of resending step 5's unconfirmed emails
    ESCALATE = "run_escalate"
    FOLLOW_UP_OWN = "follow_up_own"
    FOLLOW_UP_DONE = "follow_up_done"


class ButtonValue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    execution_id: str
    fingerprint: str = ""

    def to_value(self) -> str:
        return self.model_dump_json()

    @classmethod
    def parse(cls, value: str) -> ButtonValue:
        try:
            return cls.model_validate_json(value)
        except ValidationError as exc:
            raise ValueError(f"not a rollback button value: {exc.error_count()} problems") from None


class FollowUpValue(BaseModel):
    """A post-rollback action's button: which run, which item."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    item: FollowUpItem

    def to_value(self) -> str:
        return self.model_dump_json()

    @classmethod
    def parse(cls, value: str) -> FollowUpValue:
        try:
            return cls.model_validate_json(value)
        except ValidationError as exc:
            raise ValueError(f"not a follow-up button value: {exc.error_count()} problems") \
                from None
