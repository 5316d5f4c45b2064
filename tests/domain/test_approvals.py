"""The approval policy, case by case: each row is a click someone could make at 3 a.m."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.domain.approvals import (
    ApprovalContext,
    Refusal,
    decide_approval,
    eligible_approvers,
)
from bot.domain.states import StepStatus

BASE = ApprovalContext(
    user_id="U_BOB",
    authorised=True,
    initiator_id="U_ALICE",
    allow_self_approval=False,
    step_status=StepStatus.AWAITING_APPROVAL,
    existing_approvers=frozenset(),
    button_execution_id="ex-2",
    current_execution_id="ex-2",
    button_fingerprint="fp-new",
    current_fingerprint="fp-new",
)


@pytest.mark.parametrize(
    ("change", "refusal", "quorum"),
    [
        ({}, None, False),
        ({"existing_approvers": frozenset({"U_CAROL"})}, None, True),
        ({"authorised": False}, Refusal.NOT_AUTHORISED, False),
        ({"user_id": "U_ALICE"}, Refusal.OWN_RUN, False),
        ({"user_id": "U_ALICE", "allow_self_approval": True}, None, False),
        ({"existing_approvers": frozenset({"U_BOB"})}, Refusal.ALREADY_APPROVED, False),
        ({"step_status": StepStatus.RUNNING}, Refusal.NOT_WAITING, False),
        ({"step_status": StepStatus.SUCCEEDED}, Refusal.NOT_WAITING, False),
        ({"step_status": StepStatus.FAILED}, Refusal.NOT_WAITING, False),
        ({"button_execution_id": "ex-1"}, Refusal.STALE_BUTTON, False),
        ({"button_fingerprint": "fp-old"}, Refusal.PLAN_CHANGED, False),
        # a non-engineer is told they are not authorised before anything about the step
        ({"authorised": False, "button_execution_id": "ex-1"}, Refusal.NOT_AUTHORISED, False),
    ],
)
def test_decide_approval(change: dict[str, object], refusal: Refusal | None, quorum: bool) -> None:
    decision = decide_approval(replace(BASE, **change))  # type: ignore[arg-type]
    assert decision.refusal == refusal
    assert decision.accepted is (refusal is None)
    assert decision.quorum_reached is quorum


@pytest.mark.parametrize(
    ("authorised", "allow_self", "expected"),
    [
        ({"U1", "U2", "U3"}, False, {"U2", "U3"}),
        ({"U1", "U2"}, False, {"U2"}),
        ({"U1", "U2"}, True, {"U1", "U2"}),
        ({"U2", "U3"}, False, {"U2", "U3"}),
    ],
)
def test_eligible_approvers_excludes_initiator_unless_allowed(
    authorised: set[str], allow_self: bool, expected: set[str]
) -> None:
    assert eligible_approvers(frozenset(authorised), "U1", allow_self) == expected
