"""The Slack front driven exactly as Slack drives it: signed form posts in, Web API calls out.

Steps are scripted here (the full-sandbox run is in test_rollback_on_sandbox.py); what is under
test is what engineers see and can do in the channel and the thread.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from bot.db import repo_events
from bot.domain.log_chain import verify_chain
from bot.domain.states import RunStatus, StepStatus
from bot.domain.steps import StepName
from bot.slack.actions import ActionId
from tests.engine.fake_steps import ScriptedStep
from tests.slack.harness import (
    SECRET,
    SlackBot,
    button_of,
    button_value,
    message_text,
)
from tests.slackwire.fake_web_api import Message
from tests.slackwire.requests import sign, slash_command


async def start_rollback(bot: SlackBot, reason: str = "Phase 3 broke auth") -> Message:
    status, _ = await bot.command(reason)
    assert status == 200
    await bot.fake.wait_for(bot.start_form)
    status, _ = await bot.submit_start("U_ALICE", reason)
    assert status == 200
    return await bot.fake.wait_for(bot.root)  # type: ignore[no-any-return]


async def waiting_message(bot: SlackBot, number: int) -> Message:
    def find() -> Message | None:
        for message in reversed(bot.step_messages(number)):
            if button_of(message, ActionId.APPROVE):
                return message
        return None

    return await bot.fake.wait_for(find)  # type: ignore[no-any-return]


async def approve(bot: SlackBot, number: int, *users: str) -> Message:
    message = await waiting_message(bot, number)
    for user in users:
        status, _ = await bot.click(user, ActionId.APPROVE, message)
        assert status == 200
    return message


async def test_full_rollback_in_one_thread(bot: SlackBot, steps: dict[StepName, ScriptedStep]
                                           ) -> None:
    root = await start_rollback(bot)
    assert "LOSSY" in message_text(root)
    for number in range(1, 7):
        message = await approve(bot, number, "U_BOB", "U_CAROL")
        await bot.fake.wait_for(lambda m=message: "succeeded" in m.text)  # type: ignore[misc]
        assert "Approvals* 2/2" in message_text(message)
        assert "<@U_BOB>" in message_text(message) and "<@U_CAROL>" in message_text(message)
    assert all(step.runs == 1 for step in steps.values())
    await bot.fake.wait_for(lambda: any(u.get("title") == "Incident timeline"
                                        for u in bot.fake.uploads.values()))
    thread = bot.fake.thread(root.channel, root.ts)
    summary = [m for m in thread if m.text.startswith("Rollback completed")]
    assert len(summary) == 1
    assert "approved by u_bob, u_carol" in message_text(summary[0])
    timeline = next(u for u in bot.fake.uploads.values() if u.get("title") == "Incident timeline")
    assert timeline["thread_ts"] == root.ts
    assert timeline["content"].count("approval_given") == 12
    await bot.fake.wait_for(lambda: "completed" in bot.root().text)  # type: ignore[union-attr]
    view = await bot.engine.run_view(await bot.the_run_id())
    assert view.status is RunStatus.COMPLETED
    # The summary and the file each carry a head of the log's chain, which the stored log,
    # recomputed, passes through (the file, uploaded after the summary, at least as far).
    async with bot.engine.sessions() as session:
        chain = verify_chain(await repo_events.chained_events(session, view.run_id))
    assert chain.intact
    summary_head = re.search(r"head: `([0-9a-f]{64})`", message_text(summary[0]))
    file_head = re.search(r"head \(event \d+, seq (\d+)\): `([0-9a-f]{64})`\n$",
                          timeline["content"])
    assert summary_head is not None and file_head is not None, timeline["content"][-500:]
    assert summary_head.group(1) in chain.hashes
    assert chain.hashes[int(file_head.group(1)) - 1] == file_head.group(2)
    assert f"rollback-bot verify-log {view.run_id[:8]} --head" in message_text(summary[0])


async def test_refusals_reach_the_person_and_change_nothing(
    bot: SlackBot, steps: dict[StepName, ScriptedStep]
) -> None:
    _, answer = await bot.command("rollback please", channel="C_RANDOM", channel_name="random")
    assert "only in #oncall-engineering" in json.loads(answer)["text"]  # in the ack itself
    await bot.command("rollback please", user="U_MALLORY")
    assert "not an authorised engineer" in bot.modal_texts()[-1]  # the form says why not
    assert bot.start_form() is None

    await start_rollback(bot)
    message = await waiting_message(bot, 1)
    stale = button_value(message, ActionId.APPROVE)
    await bot.click("U_ALICE", ActionId.APPROVE, message)  # the initiator
    await bot.click("U_MALLORY", ActionId.APPROVE, message)  # not an engineer
    await bot.click("U_BOB", ActionId.APPROVE, message)
    await bot.click("U_BOB", ActionId.APPROVE, message)  # the same engineer twice
    assert "started this rollback" in bot.replies("U_ALICE")[-1]
    assert "not an authorised approver" in bot.replies("U_MALLORY")[-1]
    assert "already approved" in bot.replies("U_BOB")[-1]
    assert steps[StepName.BACKUP].runs == 0

    await bot.command("second rollback", user="U_CAROL")
    refusal = bot.modal_texts()[-1]
    assert "already active" in refusal and "slack.com/archives/C_ONCALL/p" in refusal

    await bot.click("U_CAROL", ActionId.APPROVE, message)
    await bot.fake.wait_for(lambda: steps[StepName.BACKUP].runs == 1)
    await waiting_message(bot, 2)
    await bot.click("U_ALICE", ActionId.APPROVE, message, stale)  # step 1 no longer waits
    assert "not waiting" in bot.replies("U_ALICE")[-1]
    assert steps[StepName.BACKUP].runs == 1
    assert bot.fake.calls_to("chat.postEphemeral") == []


async def test_start_needs_the_lossy_acknowledgement(bot: SlackBot) -> None:
    status, body = await bot.submit_start("U_ALICE", "Phase 3 broke auth", acknowledged=False)
    assert status == 200
    answer = json.loads(body)
    assert answer["response_action"] == "errors" and "lossy_ack" in answer["errors"]
    assert bot.root() is None and await bot.engine.active_run_id() is None


async def test_reason_mentioning_payload_still_opens_the_modal(bot: SlackBot) -> None:
    status, _ = await bot.command("payload signing broke after Phase 3")
    assert status == 200
    form = await bot.fake.wait_for(bot.start_form)
    assert "payload signing broke" in json.dumps(form)


@pytest.mark.parametrize("tamper", ["bad_signature", "stale"])
async def test_unsigned_or_stale_requests_get_401(bot: SlackBot, tamper: str) -> None:
    body = slash_command("Phase 3 broke auth", "U_ALICE", "C_ONCALL", "oncall-engineering")
    if tamper == "bad_signature":
        headers = sign(body, "not-the-secret")
    else:
        headers = sign(body, SECRET, timestamp=int(time.time()) - 6 * 60)
    status, _ = await bot.post(body, headers)
    assert status == 401
    assert bot.fake.calls_to("views.open") == []


async def test_failed_step_offers_retry_with_fresh_approvals(
    bot: SlackBot, steps: dict[StepName, ScriptedStep]
) -> None:
    steps[StepName.BACKUP].fail_times = 1
    await start_rollback(bot)
    await approve(bot, 1, "U_BOB", "U_CAROL")
    failed = await bot.fake.wait_for(
        lambda: next((m for m in bot.step_messages(1) if "failed" in m.text), None))
    assert "failed on purpose" in message_text(failed)
    assert button_of(failed, ActionId.RETRY) and button_of(failed, ActionId.ABORT)
    await bot.click("U_BOB", ActionId.RETRY, failed)
    retry = await waiting_message(bot, 1)
    assert retry.ts != failed.ts and "attempt 2" in message_text(retry)
    assert steps[StepName.BACKUP].runs == 1
    await approve(bot, 1, "U_BOB", "U_CAROL")
    await bot.fake.wait_for(lambda: steps[StepName.BACKUP].runs == 2)
    await waiting_message(bot, 2)
    view = await bot.engine.run_view(await bot.the_run_id())
    assert view.steps[0].status is StepStatus.SUCCEEDED


async def test_reject_asks_why_then_stops_the_run_and_records_it(
    bot: SlackBot, steps: dict[StepName, ScriptedStep]
) -> None:
    from tests.slack.harness import CHANNEL
    from tests.slackwire.requests import view_submission

    root = await start_rollback(bot)
    message = await waiting_message(bot, 1)
    await bot.click("U_BOB", ActionId.REJECT, message)
    opened = await bot.fake.wait_for(lambda: [c for c in bot.fake.calls_to("views.open")
                                              if c.args["view"].get("callback_id") ==
                                              "rollback_reject"])
    metadata = opened[0].args["view"]["private_metadata"]
    values = {"reject_reason": {"reject_reason_input": {"type": "plain_text_input",
                                                        "value": "wrong target database"}}}
    status, _ = await bot.post(view_submission("U_BOB", "rollback_reject", metadata, values))
    assert status == 200
    summary = await bot.fake.wait_for(lambda: [m for m in bot.fake.thread(CHANNEL, root.ts)
                                               if m.text.startswith("Rollback aborted")])
    assert "wrong target database" in message_text(summary[0])
    assert "ABORTED" in bot.root().text  # type: ignore[union-attr]
    assert await bot.engine.active_run_id() is None
    assert steps[StepName.BACKUP].runs == 0


async def test_help_status_and_plan_answer_privately(bot: SlackBot) -> None:
    _, help_answer = await bot.command("help")
    assert "`/rollback-phase3 plan` every step's plan" in json.loads(help_answer)["text"]
    await bot.command("status")
    await bot.command("plan")
    text = "\n".join(bot.replies("U_ALICE"))
    assert "No rollback is active." in text
    assert "Dry run — nothing changed" in text and "1. Back up the database" in text
    assert bot.root() is None


async def test_duplicate_deliveries_from_slack_change_nothing(
    bot: SlackBot, steps: dict[StepName, ScriptedStep]
) -> None:
    from tests.slack.harness import CHANNEL
    from tests.slackwire.requests import block_actions

    await start_rollback(bot)
    status, _ = await bot.submit_start("U_ALICE", "Phase 3 broke auth")  # the same, again
    assert status == 200
    message = await waiting_message(bot, 1)
    body = block_actions("U_BOB", ActionId.APPROVE.value,
                         button_value(message, ActionId.APPROVE) or "", CHANNEL, message.ts,
                         message.thread_ts)
    for attempt in range(3):  # Slack retries a delivery it thinks was lost
        headers = {**sign(body, SECRET), "X-Slack-Retry-Num": str(attempt),
                   "X-Slack-Retry-Reason": "http_timeout"}
        assert (await bot.post(body, headers if attempt else None))[0] == 200
    await bot.fake.wait_for(lambda: "Approvals* 1/2" in message_text(message))
    view = await bot.engine.run_view(await bot.the_run_id())  # one run, not two
    assert [a.user_name for a in view.steps[0].approvers] == ["u_bob"]
    assert steps[StepName.BACKUP].runs == 0
