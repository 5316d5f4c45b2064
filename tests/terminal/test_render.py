"""What the terminal prints for each kind of incident-log entry, and how it asks for approvals."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.domain.events import EventKind
from bot.domain.states import RunStatus, StepStatus
from bot.domain.steps import STEP_ORDER, StepName
from bot.domain.views import ApproverView, PlanView, RunView, StepView
from bot.terminal.approvals import NamedApprovers, PromptApprovers
from bot.terminal.render import LogEntry, render_entry, status_board
from bot.terminal.summary import summary_text

T0 = datetime(2026, 2, 9, 3, 0, tzinfo=UTC)


def _view(status: RunStatus = RunStatus.ACTIVE) -> RunView:
    backup = StepView(
        step=StepName.BACKUP, execution_id="E1", attempt=1, status=StepStatus.SUCCEEDED,
        plan=PlanView("pg_dump of claude_agent_api (4 MB)", ("to /b/x.dump",), ("slow disk",),
                      "fp1"),
        approvers=(ApproverView("terminal:alice", "alice"), ApproverView("terminal:bob", "bob")),
        started_at=T0, finished_at=T0 + timedelta(seconds=2.5), summary="backup written",
        facts={"path": "/b/x.dump", "size_bytes": 4096},
    )
    rest = [StepView(step=name, execution_id=None, attempt=0, status=None, plan=None)
            for name in STEP_ORDER[1:]]
    return RunView(run_id="0123456789abcdef", status=status, initiator_id="terminal:carol",
                   initiator_name="carol", reason="Phase 3 broke auth", created_at=T0,
                   finished_at=T0 + timedelta(minutes=2) if status is not RunStatus.ACTIVE
                   else None, steps=(backup, *rest))


def _entry(kind: EventKind, step: StepName | None, **data: Any) -> LogEntry:
    return LogEntry(id=1, kind=kind.value, step=step.value if step else None, data=data,
                    actor_id="terminal:alice", created_at=T0)


CASES: list[tuple[LogEntry, list[str]]] = [
    (_entry(EventKind.PLAN_SHOWN, StepName.BACKUP, execution_id="E1", attempt=1,
            summary="pg_dump of claude_agent_api (4 MB)"),
     ["■ Step 1/6 Back up the database", "plan: pg_dump of claude_agent_api (4 MB)",
      "to /b/x.dump", "⚠ slow disk", "waiting for 2 approvals (0/2)"]),
    (_entry(EventKind.APPROVAL_GIVEN, StepName.BACKUP, user_name="alice", count=1),
     ["✔ approved 1/2: alice"]),
    (_entry(EventKind.REFUSED, StepName.BACKUP, user_name="carol", why="own_run"),
     ["✖ refused carol: own run"]),
    (_entry(EventKind.REFUSED, StepName.EMAIL_CLIENTS, user_name="bob", why="plan_too_slow",
            slow="step 5 (email_clients): loading the client directory took longer than 5 s"),
     ["✖ refused bob: plan too slow (step 5 (email_clients): loading the client directory "
      "took longer than 5 s)"]),
    (_entry(EventKind.STEP_STARTED, StepName.BACKUP, approvers=["alice", "bob"]),
     ["▶ running (approved by alice, bob)"]),
    (_entry(EventKind.STEP_OUTPUT, StepName.BACKUP, lines=["pg_dump: dumping", "done"]),
     ["│ pg_dump: dumping", "│ done"]),
    (_entry(EventKind.STEP_SUCCEEDED, StepName.BACKUP, summary="backup written",
            facts={"path": "/b/x.dump", "containers": ["api-1"]}),
     ["✓ done: backup written", "path: /b/x.dump", "containers: api-1"]),
    (_entry(EventKind.STEP_FAILED, StepName.DOWNGRADE, summary="unknown revision",
            error_tail=["found 20260201_000007"]),
     ["✗ FAILED: unknown revision", "┆ found 20260201_000007"]),
    (_entry(EventKind.RUN_ABORTED, StepName.DOWNGRADE, user_name="bob", reason="too risky"),
     ["Rollback aborted by bob: too risky"]),
    (_entry(EventKind.RUN_COMPLETED, None), ["Rollback completed: all six steps done."]),
]


@pytest.mark.parametrize(("entry", "expected"), CASES, ids=[c[0].kind for c in CASES])
def test_each_log_entry_prints_what_the_thread_would_show(
    entry: LogEntry, expected: list[str]
) -> None:
    text = "\n".join(render_entry(entry, _view()))
    for fragment in expected:
        assert fragment in text


def test_status_board_lists_six_steps_with_state_and_approvers() -> None:
    board = "\n".join(status_board(_view()))
    assert "LOSSY" in board and "started by carol: Phase 3 broke auth" in board
    assert "✓ 1/6 Back up the database (pg_dump -F c): succeeded (alice, bob)" in board
    assert board.count("not reached") == 5


def test_summary_names_approvers_durations_and_facts() -> None:
    view = _view(RunStatus.COMPLETED)
    summary = summary_text(view)
    assert "succeeded in 2.5 s" in summary and "approved by alice, bob" in summary
    assert "path: /b/x.dump" in summary and "total: 120.0 s" in summary


async def test_named_approvers_need_two_different_names() -> None:
    with pytest.raises(ValueError, match="two different approvers"):
        NamedApprovers(["alice", "alice"])
    verdict = await NamedApprovers(["alice", "bob"]).verdict(_view(), _view().steps[0])
    assert verdict.approvers == ("alice", "bob")


async def test_prompt_asks_until_two_distinct_names_or_a_rejection() -> None:
    answers = iter(["", "alice", "alice", "bob"])
    out = io.StringIO()
    step = StepView(step=StepName.DOWNGRADE, execution_id="E2", attempt=1,
                    status=StepStatus.AWAITING_APPROVAL, plan=None)
    verdict = await PromptApprovers(out, lambda _: next(answers)).verdict(_view(), step)
    assert verdict.approvers == ("alice", "bob")
    assert "a second engineer must approve" in out.getvalue()
    rejecting = iter(["reject", "dana", "plan looks wrong"])
    verdict = await PromptApprovers(out, lambda _: next(rejecting)).verdict(_view(), step)
    assert verdict.reject_reason == "plan looks wrong" and verdict.approvers == ("dana",)
