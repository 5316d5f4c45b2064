"""When the machinery around a step fails (not the step itself), the failure is logged with its
traceback and recorded as the step's failure — never a step left 'running' in silence."""

from __future__ import annotations

import logging

import pytest

from bot.domain.states import RunStatus, StepStatus
from bot.domain.steps import StepName
from bot.engine.engine import Engine
from tests.engine.fake_steps import ScriptedStep
from tests.engine.test_engine_flow import approve_twice, start


async def test_a_result_that_cannot_be_recorded_fails_the_step_loudly(
    engine: Engine, steps: dict[StepName, ScriptedStep], caplog: pytest.LogCaptureFixture
) -> None:
    # A step bug: its facts cannot be stored (a set is not JSON).
    steps[StepName.BACKUP].outcome_facts = {"tables": {"sessions", "assistants"}}
    run_id = await start(engine)
    with caplog.at_level(logging.ERROR, logger="bot.engine.engine"):
        await approve_twice(engine, run_id, StepName.BACKUP)
    logged = [r for r in caplog.records if "executor failed" in r.getMessage()]
    assert logged and "Traceback" in logged[0].getMessage(), "the traceback is in the log"
    assert "not JSON serializable" in logged[0].getMessage()
    view = await engine.run_view(run_id)
    backup = view.steps[0]
    assert backup.status is StepStatus.FAILED
    assert "the bot failed while running this step" in (backup.summary or "")
    assert "not JSON serializable" in (backup.summary or "")
    assert view.status is RunStatus.ACTIVE and view.steps[1].status is None, "no advance"
