"""Every answer reaches the person who asked: in a DM, in a channel the bot is not in, after a
refused or failed click, when Slack's 3 s for a form ran out, when the user group is wrong."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.steps import StepName
from bot.slack.actions import ActionId
from tests.engine.fake_steps import ScriptedStep, as_steps
from tests.slack.harness import SECRET, SlackBot, running_bot
from tests.slack.test_slack_front import start_rollback, waiting_message
from tests.slackwire import methods
from tests.slackwire.fake_web_api import FakeSlack
from tests.slackwire.requests import sign, slash_command, trigger_in, view_submission

DM = "D_U_ALICE_U_BOB"


def ack_text(answer: str) -> str:
    return str(json.loads(answer)["text"])


@pytest.mark.parametrize(("channel", "name"), [("C_RANDOM", "random"), (DM, "directmessage")])
async def test_help_status_and_a_refused_start_are_seen_where_the_bot_is_not(
    bot: SlackBot, channel: str, name: str
) -> None:
    bot.fake.workspace.add_dm("U_ALICE", "U_BOB")
    _, answer = await bot.command("help", channel=channel, channel_name=name)
    assert "/rollback-phase3 status" in ack_text(answer)
    _, answer = await bot.command("Phase 3 broke auth", channel=channel, channel_name=name)
    assert "Rollbacks run only in #oncall-engineering" in ack_text(answer)
    await bot.command("status", channel=channel, channel_name=name)
    assert bot.replies("U_ALICE") == ["No rollback is active."]
    assert bot.fake.calls_to("views.open") == []
    assert bot.fake.calls_to("chat.postEphemeral") == []


async def test_a_failed_click_tells_the_clicker_why(bot: SlackBot) -> None:
    await start_rollback(bot)
    message = await waiting_message(bot, 1)
    bot.fake.refuse_next("views.open", "internal_error")
    await bot.click("U_BOB", ActionId.REJECT, message)
    assert "failed after Slack took it (Slack answered `internal_error`)" in \
        bot.replies("U_BOB")[-1]


async def test_an_unrecognised_button_is_refused_to_the_clicker(bot: SlackBot) -> None:
    root = await start_rollback(bot)
    message = await waiting_message(bot, 1)
    await bot.click("U_CAROL", ActionId.APPROVE, message, value="{not a button}")
    assert "not recognised" in bot.replies("U_CAROL")[-1]
    assert root.ts in bot.fake.messages


async def test_a_form_too_late_for_its_trigger_is_told(bot: SlackBot) -> None:
    body = slash_command("Phase 3 broke auth", "U_ALICE", "C_ONCALL", "oncall-engineering")
    trigger = trigger_in(body)
    assert trigger
    bot.fake.triggers[trigger] -= methods.TRIGGER_SECONDS + 0.5  # as if Slack sent it 3.5 s ago
    async with bot.http.post(bot.url, data=body, headers=sign(body, SECRET)) as answer:
        assert answer.status == 200
    await bot.front.background.settled()
    assert bot.fake.calls_to("views.open")[-1].error == "expired_trigger_id"
    assert "Slack's 3 seconds to open the rollback form passed" in bot.replies("U_ALICE")[-1]


async def test_a_refused_start_submission_reaches_the_submitter(bot: SlackBot) -> None:
    await bot.command("Phase 3 broke auth", user="U_CAROL")
    carols_form = bot.start_form()
    assert carols_form is not None
    await start_rollback(bot)  # Alice opens her form and starts while Carol's is still open
    values = {"reason": {"reason_input": {"type": "plain_text_input", "value": "me too"}},
              "lossy_ack": {"lossy_ack_input": {"type": "checkboxes", "selected_options": [
                  {"value": "lossy_acknowledged"}]}}}
    await bot.post(view_submission("U_CAROL", "rollback_start",
                                   carols_form["private_metadata"], values))
    assert "already active" in bot.replies("U_CAROL")[-1]
    assert "slack.com/archives/C_ONCALL/p" in bot.replies("U_CAROL")[-1]


@pytest.fixture
async def group_bot(
    fake_slack: FakeSlack, bot_sessionmaker: async_sessionmaker[AsyncSession],
    steps: dict[StepName, ScriptedStep],
) -> AsyncIterator[SlackBot]:
    async with running_bot(fake_slack, bot_sessionmaker, as_steps(steps),
                           approver_user_ids="", approver_usergroup_id="S_ONCALL") as running:
        yield running


@pytest.mark.parametrize(("breakage", "named"), [
    ("wrong_group", "APPROVER_USERGROUP_ID is not a user group"),
    ("missing_scope", "usergroups:read"),
])
async def test_a_user_group_that_cannot_be_read_is_a_clear_refusal(
    group_bot: SlackBot, breakage: str, named: str
) -> None:
    fake = group_bot.fake
    if breakage == "missing_scope":
        fake.usergroups["S_ONCALL"] = ["U_ALICE", "U_BOB", "U_CAROL"]
        fake.granted_scopes = {"chat:write", "commands", "files:write"}
    await group_bot.command("status")
    assert named in group_bot.replies("U_ALICE")[-1]
    await group_bot.command("Phase 3 broke auth")
    refusal = group_bot.modal_texts()[-1]
    assert "who may approve could not be checked" in refusal and named in refusal
    assert group_bot.start_form() is None


async def test_the_user_group_lets_its_members_in(group_bot: SlackBot) -> None:
    group_bot.fake.usergroups["S_ONCALL"] = ["U_ALICE", "U_BOB", "U_CAROL"]
    await group_bot.command("status")
    assert group_bot.replies("U_ALICE") == ["No rollback is active."]
    await group_bot.command("status", user="U_MALLORY")
    assert "not an authorised engineer" in group_bot.replies("U_MALLORY")[-1]


@pytest.mark.parametrize(("members", "ok", "named"), [
    (None, False, "APPROVER_USERGROUP_ID is not a user group"),
    (["U_ALICE", "U_BOB"], True, "has 2 members"),
])
async def test_check_names_a_user_group_that_cannot_be_read(
    fake_slack: FakeSlack, members: list[str] | None, ok: bool, named: str
) -> None:
    from bot.preflight import check_approvers
    from bot.settings import Settings

    if members is not None:
        fake_slack.usergroups["S_ONCALL"] = members
    settings = Settings(_env_file=None, slack_bot_token="xoxb-t",  # type: ignore[call-arg]
                        slack_api_url=fake_slack.url, approver_usergroup_id="S_ONCALL")
    line = await check_approvers(settings)
    assert line is not None and line.ok is ok and named in line.text()
