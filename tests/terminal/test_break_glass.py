"""`rehearse --real` is break-glass under the same two-person rule as Slack: only configured
approvers, two distinct ones, never the initiator; a run started in Slack is attached to only
with `--take-over <reason>`, which the incident log and the thread both show."""

from __future__ import annotations

import argparse
import io

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_events
from bot.domain.events import EventKind, Source
from bot.domain.states import RunStatus
from bot.engine.engine import Actor, Engine
from bot.settings import Settings, SettingsError
from bot.slack.blocks import status_board
from bot.terminal.approvals import NamedApprovers
from bot.terminal.decisions import FrontError
from bot.terminal.rehearse import (
    BreakGlass,
    add_rehearse_arguments,
    follow_or_start,
    rehearse_command,
)
from tests.engine.fake_steps import as_steps, scripted_steps

APPROVERS = "U_ALICE,U_BOB,U_CAROL"
TARGET = "postgresql://postgres@db.prod:5432/claude_agent"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_rehearse_arguments(parser)
    return parser.parse_args(list(argv))


def real_settings() -> Settings:
    return Settings(_env_file=None, target_database_url=TARGET,  # type: ignore[call-arg]
                    approver_user_ids=APPROVERS)


@pytest.mark.parametrize(("argv", "why"), [
    (("--approver", "U_BOB", "--approver", "someone", "--initiator", "U_ALICE"),
     "not configured approvers"),
    (("--approver", "U_BOB", "--approver", "U_BOB", "--initiator", "U_ALICE"),
     "two different approvers"),
    (("--approver", "U_ALICE", "--approver", "U_BOB", "--initiator", "U_ALICE"),
     "cannot approve it"),
    (("--approver", "U_BOB", "--approver", "U_CAROL", "--initiator", "mallory"),
     "not a configured approver"),
    (("--take-over", "slack is down", "--approver", "U_BOB", "--approver", "U_CAROL"),
     "goes with --real"),
])
def test_real_refuses_what_breaks_the_two_person_rule(argv: tuple[str, ...], why: str) -> None:
    real = ("--real",) if "--take-over" not in argv else ("--sandbox",)
    with pytest.raises(SettingsError, match=why):
        rehearse_command(parse(*real, *argv), real_settings())


def test_real_without_configured_approvers_is_refused() -> None:
    bare = Settings(_env_file=None, target_database_url=TARGET)  # type: ignore[call-arg]
    with pytest.raises(SettingsError, match="needs APPROVER_USER_IDS"):
        rehearse_command(parse("--real", "--approver", "U_BOB", "--approver", "U_CAROL",
                               "--initiator", "U_ALICE"), bare)


async def start_in_slack(engine: Engine) -> str:
    answer = await engine.start_run(Actor("U_ALICE", "alice", Source.SLACK, True),
                                    "Phase 3 broke auth", "C_ONCALL")
    assert answer.accepted and answer.run_id
    return answer.run_id


async def test_a_slack_run_is_attached_to_only_with_a_take_over_reason(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    settings = Settings(_env_file=None, approver_user_ids=APPROVERS,  # type: ignore[call-arg]
                        step_timeout_seconds=30)
    engine = Engine(bot_sessionmaker, settings, as_steps(scripted_steps()), replica_id="term")
    glass = BreakGlass(settings.approver_user_ids)
    out = io.StringIO()
    try:
        run_id = await start_in_slack(engine)
        with pytest.raises(FrontError, match="--take-over"):
            await follow_or_start(engine, out, NamedApprovers(["U_BOB", "U_CAROL"]), "U_BOB",
                                  "r", glass)
        async with bot_sessionmaker() as session:
            kinds = [e.kind for e in await repo_events.all_events(session, run_id)]
        assert EventKind.TAKEN_OVER not in kinds and EventKind.APPROVAL_GIVEN not in kinds

        # The initiator of the Slack run cannot approve it from the terminal either.
        with pytest.raises(FrontError, match="started this rollback"):
            await follow_or_start(engine, out, NamedApprovers(["U_ALICE", "U_BOB"]), "U_CAROL",
                                  "r", BreakGlass(settings.approver_user_ids, "slack is down"))

        view = await follow_or_start(engine, out, NamedApprovers(["U_BOB", "U_CAROL"]),
                                     "U_CAROL", "r",
                                     BreakGlass(settings.approver_user_ids, "slack is down"))
    finally:
        await engine.shutdown()
    assert view.status is RunStatus.COMPLETED
    assert all({a.user_id for a in s.approvers} == {"U_BOB", "U_CAROL"} for s in view.steps)
    async with bot_sessionmaker() as session:
        taken = await repo_events.events_of_kind(session, run_id, EventKind.TAKEN_OVER)
    assert [(e.actor, e.data["reason"]) for e in taken] == [("U_CAROL", "slack is down")] * 2
    assert "Taken over at the terminal by U_CAROL: slack is down" in view.notices
    _text, blocks = status_board(view)
    assert "slack is down" in str(blocks), "the thread's status board shows the take-over"
    assert "taken over at the terminal by U_CAROL" in out.getvalue()
