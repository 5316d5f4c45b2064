"""When a Resend click may count, case by case (before whose click it is is looked at)."""

from __future__ import annotations

import pytest

from bot.domain.approvals import Refusal
from bot.domain.resend import resend_refusal
from bot.domain.states import RunStatus

UNCONFIRMED = ["a" * 64, "b" * 64]
BASE = {"run_status": RunStatus.COMPLETED_UNCONFIRMED, "email_step_done": True,
        "clients": UNCONFIRMED, "another_run_active": False, "resend_running": False}


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({}, None),
        ({"run_status": RunStatus.ACTIVE}, None),  # step 6 still to come
        ({"another_run_active": True}, Refusal.ANOTHER_RUN_ACTIVE),
        ({"resend_running": True}, Refusal.NOT_WAITING),
        ({"email_step_done": False, "run_status": RunStatus.ACTIVE}, Refusal.NOT_WAITING),
        ({"run_status": RunStatus.ABORTED}, Refusal.NOT_WAITING),
        ({"run_status": RunStatus.ABORTED, "clients": []}, Refusal.NOT_WAITING),
        # every email confirmed: a click on a message drawn before, or a second tap
        ({"run_status": RunStatus.COMPLETED, "clients": []}, Refusal.NOTHING_TO_RESEND),
        ({"run_status": RunStatus.ACTIVE, "clients": []}, Refusal.NOTHING_TO_RESEND),
        ({"clients": [], "another_run_active": True}, Refusal.NOTHING_TO_RESEND),
        ({"run_status": RunStatus.COMPLETED}, Refusal.NOT_WAITING),
    ],
)
def test_resend_refusal(change: dict[str, object], refusal: Refusal | None) -> None:
    assert resend_refusal(**{**BASE, **change}) == refusal  # type: ignore[arg-type]
