"""`rollback-bot plan` reads the bot database as `/rollback-phase3 plan` does: the same code path
prints the rotation a new run would continue, and the one a finished run closed; with the bot
database unreachable, the plan is still made and says in a `note:` line what it could not read.
The command's own handler, on the real steps against a sandbox target (steps 1-3 and 6 scripted
for the runs that make the rotations)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import socket
from collections.abc import Callable

import pytest
from pydantic import SecretStr

from bot.cli import _plan
from bot.domain.states import RunStatus
from bot.engine.engine import Engine
from bot.engine.reports import plan_text
from bot.settings import Settings
from tests.engine.test_engine_flow import BOB, start, waiting_click
from tests.steps.test_adopt_rotation import (  # noqa: F401 (fixtures)
    BEFORE_KEYS,
    S,
    approve,
    engines,
    settings_for_run,
)

pytestmark = pytest.mark.usefixtures("phase2_api")  # steps 5 and 6 plan against its api


def with_bot_database(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"database_url": SecretStr(url)})


async def plan_command(settings: Settings) -> str:
    """What `rollback-bot plan` prints (its handler runs its own event loop: another thread)."""
    out = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out):
            return _plan(argparse.Namespace(), settings)

    assert await asyncio.to_thread(run) == 0
    return out.getvalue()


async def test_the_command_shows_the_rotation_a_new_run_would_continue(
    settings_for_run: Callable[..., Settings], engines: Callable[..., Engine],  # noqa: F811
    bot_db_url: str,
) -> None:
    settings = settings_for_run()
    engine = engines(settings, "replica-a")
    run1 = await start(engine)
    await approve(engine, run1, *BEFORE_KEYS, S.ROTATE_KEYS)
    assert (await engine.reject(await waiting_click(engine, run1, S.EMAIL_CLIENTS, BOB),
                                "wrong template")).accepted
    printed = await plan_command(with_bot_database(settings, bot_db_url))
    line = f"continuing the rotation of run {run1[:8]}: 6 clients keyed, 0 mailed"
    assert printed.count(line) >= 2, "steps 4 and 5 both say whose rotation they continue"
    assert "note:" not in printed


async def test_the_command_and_the_slack_plan_say_the_same_after_a_closed_rotation(
    settings_for_run: Callable[..., Settings], engines: Callable[..., Engine],  # noqa: F811
    bot_db_url: str,
) -> None:
    settings = settings_for_run()
    engine = engines(settings, "replica-a")
    run1 = await start(engine)
    await approve(engine, run1, *BEFORE_KEYS, S.ROTATE_KEYS, S.EMAIL_CLIENTS, S.VERIFY)
    assert (await engine.run_view(run1)).status is RunStatus.COMPLETED
    printed = await plan_command(with_bot_database(settings, bot_db_url))
    closed = f"every client was already keyed and mailed by the rotation of run {run1[:8]}"
    assert closed in printed
    slack = {plan.step: plan for plan in await engine.dry_run()}  # `/rollback-phase3 plan`
    for step in (S.ROTATE_KEYS, S.EMAIL_CLIENTS):  # the engine's steps 1-3 and 6 are scripted
        assert plan_text(slack[step]) in printed, step


async def test_an_unreachable_bot_database_is_a_note_not_a_failure(
    settings_for_run: Callable[..., Settings],  # noqa: F811
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nobody = f"postgresql://postgres@127.0.0.1:{port}/bot"
    printed = await plan_command(with_bot_database(settings_for_run(), nobody))
    assert "note: the bot database could not be read" in printed
    assert "may miss a rotation a new run would continue" in printed
    assert "1. Back up the database" in printed and "6. " in printed, "every step planned"
    unset = await plan_command(settings_for_run())
    assert "note: DATABASE_URL is not set" in unset
