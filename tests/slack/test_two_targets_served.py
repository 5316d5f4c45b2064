"""One `serve` front for two targets, driven through the signed-request wire and the fake Slack:
staging and production each roll back their own sandbox (its database, its api, its client
directory; steps 2, 4 and 5 real, with a real SMTP server) at the same time, each in its own
thread, each approved by its own approvers. Production's approvers are not staging's: a click
of a staging-only engineer on production's button is refused by the bot, and the other way
round. Each target's keys end in its own rows, each contact is mailed once with its own
target's key, and every board and step message names its target."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import RollbackRun
from bot.domain.states import RunStatus
from bot.domain.step_protocol import Step
from bot.domain.steps import StepName
from bot.engine.engine import Engine
from bot.settings import Settings
from bot.slack.actions import START_MODAL_CALLBACK, ActionId
from bot.slack.app import build_slack_front
from bot.slack.http import build_web_app
from sandbox.api import build_app
from sandbox.migrate import migrate
from steps.registry import default_steps
from tests.engine.fake_steps import ScriptedStep
from tests.fixtures.http import serving
from tests.fixtures.postgres import DatabaseFactory, clone
from tests.fixtures.sandbox import SandboxSeed
from tests.fixtures.smtp import SmtpServer
from tests.slack.harness import CHANNEL, SECRET, SlackBot, button_value, message_text
from tests.slackwire.fake_web_api import FakeSlack, Message
from tests.slackwire.serve import serve_on_free_port
from tests.steps.conftest import keys_by_old_hash, owned_rows
from tests.steps.sandbox_settings import sandbox_settings
from tests.steps.test_adopt_rotation import contacts_of
from tests.steps.test_two_targets import directory_for

S = StepName
APPROVERS = {"staging": ("U_ALICE", "U_BOB", "U_CAROL"),
             "production": ("U_ALICE", "U_DAVE", "U_ERIN")}
OUTSIDER = {"staging": "U_DAVE", "production": "U_BOB"}  # approves on the other target only


@dataclass
class Sandbox:
    url: str
    directory: Path
    before: dict[tuple[str, str], tuple[str, str | None]]


@dataclass
class TwoTargets:
    bot: SlackBot
    sandboxes: dict[str, Sandbox]


@pytest.fixture
async def served(
    databases: DatabaseFactory, sandbox_seed: SandboxSeed, tmp_path: Path,
    smtp_server: SmtpServer, bot_sessionmaker: async_sessionmaker[AsyncSession],
    fake_slack: FakeSlack,
) -> AsyncIterator[TwoTargets]:
    sandboxes: dict[str, Sandbox] = {}
    engines: list[Engine] = []
    apis = []
    async with asyncio.TaskGroup() as group:
        urls = {name: group.create_task(clone(databases, sandbox_seed.template_url, name))
                for name in APPROVERS}
    try:
        for name, task in urls.items():
            url = task.result()
            await migrate(url, "20260201_000006", down=True)
            api = serving(build_app(phase=2, database_url=url))
            apis.append(api)
            directory = directory_for(sandbox_seed, name, tmp_path)
            settings = sandbox_settings(
                url, tmp_path / name, mailer="smtp", smtp_host=smtp_server.host,
                smtp_port=smtp_server.port, client_directory=directory,
                api_base_url=await api.__aenter__(), approver_user_ids=",".join(APPROVERS[name]),
                rotation_workers=1, step_timeout_seconds=120, plan_timeout_seconds=30,
            ).for_target(name)
            steps: dict[StepName, Step] = {
                **default_steps(), **{n: ScriptedStep(n) for n in (S.BACKUP, S.RESTART, S.VERIFY)}}
            engines.append(Engine(bot_sessionmaker, settings, steps, replica_id=f"one-{name}"))
            sandboxes[name] = Sandbox(url, directory, await owned_rows(url))
        bot_wide = Settings(_env_file=None, slack_bot_token="xoxb-test-token",  # type: ignore[call-arg]
                            slack_signing_secret=SECRET, slack_api_url=fake_slack.url,
                            slack_write_interval_seconds=0.02)
        front = build_slack_front(engines, bot_wide, http=True)
        front.mirror.start()
        runner, port = await serve_on_free_port(build_web_app(front.app))
        async with aiohttp.ClientSession() as http:
            bot = SlackBot(f"http://127.0.0.1:{port}/slack/events", fake_slack, engines[0],
                           front, http)
            try:
                yield TwoTargets(bot, sandboxes)
            finally:
                for engine in engines:
                    await engine.wait_idle()
                await front.close()
                await runner.cleanup()
        assert not fake_slack.lint, fake_slack.lint
    finally:
        for engine in engines:
            await engine.shutdown()
        for api in reversed(apis):
            await api.__aexit__(None, None, None)


def forms(fake: FakeSlack) -> list[dict[str, object]]:
    return [c.args["view"] for c in fake.calls_to("views.update")
            if c.error is None and c.args["view"].get("callback_id") == START_MODAL_CALLBACK]


def root_of(fake: FakeSlack, target: str) -> Message | None:
    return next((m for m in fake.roots(CHANNEL) if m.text.startswith(
        f"Phase 3 rollback on {target} ")), None)


async def start_on(bot: SlackBot, target: str) -> Message:
    shown = len(forms(bot.fake))
    status, _ = await bot.command(f"{target} Phase 3 broke auth on {target}")
    assert status == 200
    await bot.fake.wait_for(lambda: len(forms(bot.fake)) > shown)
    form = json.dumps(forms(bot.fake)[-1])
    assert '"static_select"' in form and f'"initial_option": {{"text": {{"type": ' \
        f'"plain_text", "text": "{target}"}}, "value": "{target}"}}' in form, \
        "the modal offers the targets, the one named chosen"
    status, _ = await bot.submit_start("U_ALICE", f"Phase 3 broke auth on {target}")
    assert status == 200
    return await bot.fake.wait_for(lambda: root_of(bot.fake, target))  # type: ignore[no-any-return]


def step_messages(fake: FakeSlack, root: Message, number: int) -> list[Message]:
    return [m for m in fake.thread(CHANNEL, root.ts) if m.text.startswith(f"Step {number}/6")]


async def roll_back(bot: SlackBot, target: str, root: Message) -> None:
    """Approve every step in the target's own thread, by its own approvers; the engineer who
    approves only on the other target is refused at step 1."""
    for number in range(1, 7):
        def waiting(n: int = number) -> Message | None:
            return next((m for m in reversed(step_messages(bot.fake, root, n))
                         if button_value(m, ActionId.APPROVE)), None)
        message = await bot.fake.wait_for(waiting, within=120)
        assert f"target *{target}*" in json.dumps(message.blocks), "the prompt names it"
        if number == 1:
            outsider = OUTSIDER[target]
            assert (await bot.click(outsider, ActionId.APPROVE, message))[0] == 200
            assert "not an authorised approver" in bot.replies(outsider)[-1]
        for user in APPROVERS[target][1:]:
            assert (await bot.click(user, ActionId.APPROVE, message))[0] == 200


async def test_two_targets_roll_back_at_once_through_one_front_each_in_its_own_thread(
    served: TwoTargets, smtp_server: SmtpServer,
) -> None:
    bot = served.bot
    roots = {name: await start_on(bot, name) for name in APPROVERS}
    assert roots["staging"].ts != roots["production"].ts, "each target its own thread"
    for target in bot.front.targets.served:
        assert await target.engine.active_run_id() is not None, "both active at once"
    await asyncio.gather(*(roll_back(bot, name, root) for name, root in roots.items()))
    for target in bot.front.targets.served:
        await target.engine.wait_idle()  # step 6, started by its second approval, ends

    async with bot.engine.sessions() as session:
        runs = {run.target: run for run in (await session.execute(select(RollbackRun)))
                .scalars()}
    assert set(runs) == set(APPROVERS)
    for name, root in roots.items():
        run = runs[name]
        view = await bot.engine.run_view(str(run.id))
        assert view.status is RunStatus.COMPLETED, (name, view.status)
        await bot.fake.wait_for(lambda n=name, r=root: bot.fake.messages[r.ts].text.startswith(
            f"Phase 3 rollback on {n} completed"))  # the board's first line names its target
        other = "production" if name == "staging" else "staging"
        thread = bot.fake.thread(CHANNEL, root.ts)
        for number in range(1, 7):
            (message,) = [m for m in thread if m.text.startswith(f"Step {number}/6")] or [None]
            assert message is not None and f"target *{name}*" in json.dumps(message.blocks)
            assert other not in message_text(message), "nothing of the other target here"
        approvers = {a for step in view.steps for a in (x.user_id for x in step.approvers)}
        assert approvers == set(APPROVERS[name][1:]), "only the target's own approvers"

        sandbox = served.sandboxes[name]
        clients = keys_by_old_hash(sandbox.before, await owned_rows(sandbox.url))
        assert all(len(keys) == 1 for keys in clients.values()), "one key per client"
        other_keys = {k for _, k in (await owned_rows(served.sandboxes[other].url)).values()}
        for email, old_hash in contacts_of(sandbox.directory).items():
            received = smtp_server.to(email)
            assert email.startswith(f"{name}.") and len(received) == 1, email
            ((_, key),) = clients[old_hash]
            assert key is not None and key in received[0].get_content()
            assert key not in other_keys, "no key of one target in the other's rows"
    assert len(smtp_server.messages) == sum(len(contacts_of(s.directory))
                                            for s in served.sandboxes.values())
