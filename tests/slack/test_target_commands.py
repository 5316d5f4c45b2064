"""`/rollback-phase3` with several targets, through the signed wire (steps scripted): the target
is named first; an unknown one is an error naming the known ones, a refused one says what is
missing, and the others keep working; each target's approvers are its own (the two-person rule
counted on them), and the modal's select decides where the run starts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import RollbackRun
from bot.domain.events import Source
from bot.domain.states import RunStatus
from bot.engine.engine import Actor, Engine
from bot.settings import Settings
from bot.slack.app import build_slack_front
from bot.slack.command_text import CommandText, parse_command
from bot.slack.http import build_web_app
from bot.slack.modal import TARGET_BLOCK_ID
from tests.engine.fake_steps import as_steps, scripted_steps
from tests.slack.harness import CHANNEL, SECRET, SlackBot
from tests.slackwire.fake_web_api import FakeSlack
from tests.slackwire.serve import serve_on_free_port

NAMES = ("staging", "production", "qa")
APPROVERS = {"staging": "U_ALICE,U_BOB,U_CAROL", "production": "U_ALICE,U_DAVE"}
QA_MISSING = "missing QA__TARGET_DATABASE_URL, QA__API_BASE_URL"


@pytest.mark.parametrize(("text", "expected"), [
    ("", CommandText("help")),
    ("help me", CommandText("help")),
    ("production db down", CommandText("start", "production", "db down")),
    ("PRODUCTION   db  down", CommandText("start", "production", "db down")),
    ("plan staging", CommandText("plan", "staging")),
    ("status", CommandText("status")),
    ("check qa", CommandText("check", "qa")),
    ("escalate production nobody answers", CommandText("escalate", "production",
                                                       "nobody answers")),
    ("prodution db down", CommandText("start", None, "prodution db down",
                                      "unknown target `prodution`; known targets: staging, "
                                      "production, qa. Use `/rollback-phase3 <target> "
                                      "<reason>`.")),
    ("plan", CommandText("plan", None, "", "name the target; known targets: staging, "
                         "production, qa. Use `/rollback-phase3 plan <target>`.")),
    ("<!channel>` x", CommandText("start", None, "<!channel>` x", "unknown target `channel`; "
                                  "known targets: staging, production, qa. Use "
                                  "`/rollback-phase3 <target> <reason>`.")),
])
def test_the_command_text_names_its_target_or_says_which_exist(
        text: str, expected: CommandText) -> None:
    assert parse_command(text, NAMES, named=True) == expected


def test_one_target_reads_the_command_as_today() -> None:
    assert parse_command("default db down", ("default",), named=False) == \
        CommandText("start", None, "default db down"), "`default` is never a word to strip"
    assert parse_command("plan", ("default",), named=False) == CommandText("plan")
    only = parse_command("db down", ("production",), named=True)
    assert only == CommandText("start", None, "db down"), "the only target need not be named"


@pytest.fixture
async def bot(fake_slack: FakeSlack, bot_sessionmaker: async_sessionmaker[AsyncSession]
              ) -> AsyncIterator[SlackBot]:
    engines = [Engine(bot_sessionmaker, Settings(  # type: ignore[call-arg]
        _env_file=None, approver_user_ids=ids, target_database_url=f"postgresql://x@{name}/db",
        step_timeout_seconds=60).for_target(name), as_steps(scripted_steps()),
        replica_id=f"r-{name}") for name, ids in APPROVERS.items()]
    bot_wide = Settings(_env_file=None, slack_bot_token="xoxb-test-token",  # type: ignore[call-arg]
                        slack_signing_secret=SECRET, slack_api_url=fake_slack.url,
                        slack_write_interval_seconds=0.02)
    front = build_slack_front(engines, bot_wide, http=True, refused={"qa": QA_MISSING})
    front.mirror.start()
    runner, port = await serve_on_free_port(build_web_app(front.app))
    async with aiohttp.ClientSession() as http:
        try:
            yield SlackBot(f"http://127.0.0.1:{port}/slack/events", fake_slack, engines[0],
                           front, http)
        finally:
            for engine in engines:
                await engine.wait_idle()
            await front.close()
            for engine in engines:
                await engine.shutdown()
            await runner.cleanup()
    assert not fake_slack.lint, fake_slack.lint


async def runs_by_target(bot: SlackBot) -> dict[str, str]:
    async with bot.engine.sessions() as session:
        return {run.target: run.initiator_id for run in
                (await session.execute(select(RollbackRun))).scalars()}


async def test_an_unknown_or_refused_target_is_a_clear_error_and_the_others_keep_working(
        bot: SlackBot) -> None:
    _, answer = await bot.command("prodution db down")
    assert "unknown target `prodution`; known targets: staging, production, qa" in \
        json.loads(answer)["text"]
    _, answer = await bot.command("qa db down")
    assert f"target qa is refused: {QA_MISSING}" in json.loads(answer)["text"]
    _, answer = await bot.command("plan")
    assert "name the target" in json.loads(answer)["text"]
    assert not bot.fake.calls_to("views.open"), "no form for a target nobody can roll back"

    await bot.command("status", user="U_ALICE")
    status = bot.replies("U_ALICE")[-1]
    assert "*staging*" in status and "*production*" in status
    assert f"target qa is refused: {QA_MISSING}" in status
    assert await runs_by_target(bot) == {}

    await bot.command("staging db down", user="U_ALICE")
    await bot.fake.wait_for(bot.start_form)
    await bot.submit_start("U_ALICE", "db down")
    assert await runs_by_target(bot) == {"staging": "U_ALICE"}, "staging still works"


async def test_each_target_asks_its_own_approvers_and_the_select_decides_where(
        bot: SlackBot) -> None:
    await bot.command("production db down", user="U_BOB")
    assert "not an authorised engineer for rollbacks on production" in bot.modal_texts()[-1]
    await bot.command("production db down", user="U_ALICE")
    assert "every step on production needs 2 approvals from engineers other than you, and " \
        "only 1 are authorised there" in bot.modal_texts()[-1], "the two-person rule, there"

    await bot.command("staging db down", user="U_BOB")
    form = await bot.fake.wait_for(bot.start_form)
    assert any(b.get("block_id") == TARGET_BLOCK_ID for b in form["blocks"])
    await bot.submit_start("U_BOB", "db down", target="production")  # chose another in the form
    assert "not an authorised engineer for rollbacks on production" in bot.replies("U_BOB")[-1]
    assert await runs_by_target(bot) == {}

    forged = {**form, "blocks": [{**b, "element": {**b["element"], "options": [
        {"text": {"type": "plain_text", "text": "qa"}, "value": "qa"}]}}
        if b.get("block_id") == TARGET_BLOCK_ID else b for b in form["blocks"]]}
    bot.fake.calls_to("views.update")[-1].args["view"] = forged
    status, body = await bot.submit_start("U_BOB", "db down", target="qa")
    assert status == 200 and f"target qa is refused: {QA_MISSING}" in \
        json.loads(body)["errors"][TARGET_BLOCK_ID]
    bot.fake.calls_to("views.update")[-1].args["view"] = form
    await bot.submit_start("U_BOB", "db down", target="staging")
    assert await runs_by_target(bot) == {"staging": "U_BOB"}


async def test_a_thread_nobody_can_write_stops_the_run_of_whichever_target(
        bot: SlackBot) -> None:
    """The mirror stops a run whose thread Slack refuses through the run's own target's engine
    (production's here, not the first target's, which would refuse a run not its own)."""
    bot.fake.workspace.remove_bot(CHANNEL)
    production = bot.front.targets.get("production").engine
    answer = await production.start_run(Actor("U_ALICE", "alice", Source.SLACK, True),
                                        "Phase 3 broke auth", CHANNEL)
    assert answer.run_id
    deadline = asyncio.get_running_loop().time() + 30
    while (await production.run_view(answer.run_id)).status is not RunStatus.ABORTED:
        assert asyncio.get_running_loop().time() < deadline, "the run stayed active"
        await asyncio.sleep(0.1)
    assert await production.active_run_id() is None
