"""Step transitions: what may follow what, and what may never happen."""

from __future__ import annotations

import pytest

from bot.domain.states import IllegalTransition, StepStatus, can_transition, transition
from bot.domain.steps import STEP_ORDER, StepName, next_step, step_number

S = StepStatus


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (S.AWAITING_APPROVAL, S.RUNNING, True),
        (S.AWAITING_APPROVAL, S.REJECTED, True),
        (S.AWAITING_APPROVAL, S.SUCCEEDED, False),  # never done without running
        (S.RUNNING, S.SUCCEEDED, True),
        (S.RUNNING, S.ALREADY_DONE, True),
        (S.RUNNING, S.INTERRUPTED, True),
        (S.RUNNING, S.AWAITING_APPROVAL, False),
        (S.FAILED, S.RUNNING, False),  # a retry is a new attempt, approved afresh
        (S.INTERRUPTED, S.RUNNING, False),
        (S.FAILED, S.ABORTED, True),
        (S.SUCCEEDED, S.FAILED, False),
        (S.REJECTED, S.RUNNING, False),
    ],
)
def test_transitions(current: StepStatus, new: StepStatus, allowed: bool) -> None:
    assert can_transition(current, new) is allowed
    if allowed:
        assert transition(current, new) is new
    else:
        with pytest.raises(IllegalTransition):
            transition(current, new)


def test_six_steps_in_runbook_order() -> None:
    assert [step_number(s) for s in STEP_ORDER] == [1, 2, 3, 4, 5, 6]
    assert STEP_ORDER[0] is StepName.BACKUP and STEP_ORDER[-1] is StepName.VERIFY
    assert next_step(StepName.DOWNGRADE) is StepName.RESTART
    assert next_step(StepName.VERIFY) is None
