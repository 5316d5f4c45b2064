"""`rollback-bot rehearse` exits so that a script can tell "all confirmed" from "completed with N
unconfirmed deliveries" from "not completed": the front `rehearse` drives, on a real bot
database, to each ending; the command itself as a real process for its help and a refusal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.ledgers import NotificationRecord, NotificationStatus
from bot.domain.states import RunStatus
from bot.domain.step_protocol import Outcome, OutputSink, StepContext
from bot.domain.steps import StepName
from bot.engine.engine import Engine
from bot.settings import Settings
from bot.terminal.approvals import NamedApprovers
from bot.terminal.exit_codes import (
    EXIT_COMPLETED,
    EXIT_NOT_COMPLETED,
    EXIT_REFUSED,
    EXIT_UNCONFIRMED,
    exit_code,
)
from bot.terminal.rehearse import follow_or_start
from bot.terminal.summary import summary_text
from tests.engine.fake_steps import ScriptedStep, as_steps, scripted_steps

BIN = Path(sys.prefix) / "bin" / "rollback-bot"
IN_FLIGHT = ("a1" * 32, "b2" * 32)


class EmailsInFlight(ScriptedStep):
    """Step 5 as a crash mid-send leaves it: two clients marked `sending`, never confirmed."""

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        await ctx.notifications.save(ctx.rotation_id, *(
            NotificationRecord(client, NotificationStatus.SENDING, f"{client[:4]}@example.test")
            for client in IN_FLIGHT))
        return await super().run(ctx, emit)


@pytest.mark.parametrize(("ending", "status", "code"), [
    ("all sent", RunStatus.COMPLETED, EXIT_COMPLETED),
    ("in flight", RunStatus.COMPLETED_UNCONFIRMED, EXIT_UNCONFIRMED),
    ("step fails", RunStatus.ABORTED, EXIT_NOT_COMPLETED),
])
async def test_each_ending_of_a_rehearsal_has_its_own_exit_code(
    bot_sessionmaker: async_sessionmaker[AsyncSession], ending: str, status: RunStatus,
    code: int,
) -> None:
    steps = scripted_steps()
    if ending == "in flight":
        steps[StepName.EMAIL_CLIENTS] = EmailsInFlight(StepName.EMAIL_CLIENTS)
    if ending == "step fails":
        steps[StepName.RESTART].fail_times = 1  # the named approvers abort a failed step
    settings = Settings(_env_file=None, step_timeout_seconds=30)  # type: ignore[call-arg]
    engine = Engine(bot_sessionmaker, settings, as_steps(steps), replica_id="term")
    out = io.StringIO()
    try:
        view = await follow_or_start(engine, out, NamedApprovers(["alice", "bob"]), "carol",
                                     "rehearsal")
    finally:
        await engine.shutdown()
    assert view.status is status, out.getvalue()[-2000:]
    assert exit_code(view) == code
    if ending == "in flight":
        assert "2 unconfirmed deliveries: a1a1a1a1, b2b2b2b2" in summary_text(view)
    assert exit_code(None) == EXIT_NOT_COMPLETED


def run_command(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd)}  # no settings but these
    return subprocess.run([str(BIN), *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_help_documents_the_exit_codes_and_a_refusal_exits_2(tmp_path: Path) -> None:
    shown = run_command("rehearse", "--help", cwd=tmp_path)
    assert shown.returncode == 0
    assert "exit status:" in shown.stdout
    for line in ("0    completed: every step done, every email recorded sent",
                 "3    completed with N unconfirmed deliveries", "1    not completed",
                 "2    refused before any run started", "130  interrupted"):
        assert line in shown.stdout, line
    refused = run_command("rehearse", "--real", "--approver", "U_BOB", "--approver", "U_CAROL",
                          cwd=tmp_path)
    assert refused.returncode == EXIT_REFUSED
    assert "--real needs TARGET_DATABASE_URL" in refused.stderr
