"""SIGKILL of a real `rollback-bot serve` with several emails in flight; the run ends
"completed with N unconfirmed deliveries" and people resend, two approvals, through the wire.

The mail server holds three messages after DATA and one recipient before its RCPT TO is
answered: the three are uncertain (the server may deliver them), the fourth was never handed
over and is sent by the Retry like any client not yet sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.slack.actions import ActionId
from tests.crash.bot_process import (
    Bot,
    approve_step,
    start_run,
    step_message,
    wait_for_ledger,
)
from tests.crash.sandbox_env import sandbox_env
from tests.fixtures.sandbox import SandboxApi, SandboxSeed
from tests.fixtures.smtp import SmtpServer
from tests.slack.harness import CHANNEL, message_text
from tests.slackwire.fake_web_api import FakeSlack, Message

pytestmark = pytest.mark.docker


def board(fake: FakeSlack) -> Message:
    roots = fake.roots(CHANNEL)
    assert len(roots) == 1
    return roots[0]


async def test_emails_in_flight_end_unconfirmed_and_two_approvals_resend_them_once(
    bots: list[Bot], fake_slack: FakeSlack, bot_db_url: str, sandbox_api: SandboxApi,
    sandbox_seed: SandboxSeed, smtp_server: SmtpServer, tmp_path: Path,
) -> None:
    env = sandbox_env(fake_slack, bot_db_url, sandbox_api, sandbox_seed, tmp_path,
                      MAILER="smtp", SMTP_HOST=smtp_server.host, SMTP_PORT=str(smtp_server.port),
                      EMAIL_CONCURRENCY="5")
    contacts = [c for c in sandbox_seed.result.clients if c.has_contact]
    assert len(contacts) == 5
    after_data, before_rcpt = contacts[1:4], contacts[4]
    for client in after_data:
        smtp_server.stall(client.email)
    smtp_server.stall_rcpt(before_rcpt.email)
    log = tmp_path / "bot.log"
    first = Bot(env, log)
    bots.append(first)
    await first.ready()
    await start_run(first)
    for number in range(1, 5):
        message = await approve_step(first, fake_slack, number)
        await fake_slack.wait_for(lambda m=message: "succeeded" in m.text, within=60)
    await approve_step(first, fake_slack, 5)
    held = smtp_server.handler
    await fake_slack.wait_for(lambda: len(smtp_server.messages) == 1
                              and held.stalling == {c.email for c in after_data}
                              and held.stalling_rcpt == {before_rcpt.email}, within=60)
    # The one delivered is recorded too before the kill (the server holding its message is
    # not enough: a kill before its `sent` is written leaves it uncertain as well, rightly).
    await wait_for_ledger(bot_db_url, contacts[0].key_hash, "sent")
    first.kill()  # four emails in flight: three past RCPT TO, one before it
    smtp_server.unstall()

    second = Bot(env, log)
    bots.append(second)
    await second.ready()
    interrupted = await step_message(fake_slack, 5, ActionId.RETRY)
    await second.click("U_BOB", ActionId.RETRY, interrupted)
    retry = await approve_step(second, fake_slack, 5)
    await fake_slack.wait_for(lambda: "succeeded" in retry.text, within=60)
    uncertain = sorted(c.key_hash[:8] for c in after_data)
    shown = message_text(retry)
    assert all(prefix in shown for prefix in uncertain), "step 5 names the uncertain clients"
    assert before_rcpt.key_hash[:8] not in shown
    assert contacts[0].key_hash[:8] not in shown, "delivered and recorded: not uncertain"
    assert len(smtp_server.to(before_rcpt.email)) == 1, "never handed over: sent by the Retry"
    verify = await approve_step(second, fake_slack, 6)
    await fake_slack.wait_for(lambda: "succeeded" in verify.text, within=60)
    # The board, the step's attached output and the summary share one channel's write budget
    # (about a write a second) with retries behind it: on a loaded machine that takes a while.
    try:
        await fake_slack.wait_for(
            lambda: "completed with 3 unconfirmed deliveries" in message_text(board(fake_slack)),
            within=90)
    except AssertionError:
        print("board:", message_text(board(fake_slack)))  # shown for a failure only
        for call in fake_slack.calls[-30:]:
            print("call:", call.method, call.error, str(call.args)[:300])
        raise
    summary = await fake_slack.wait_for(lambda: next(
        (m for m in fake_slack.messages.values() if "summary for the post-mortem" in m.text),
        None), within=90)
    assert "completed with 3 unconfirmed deliveries" in message_text(summary)
    assert all(prefix in message_text(summary) for prefix in uncertain)
    assert not any(m.text == "Rollback completed: summary for the post-mortem"
                   for m in fake_slack.messages.values()), "never plain completed"

    resend = await step_message(fake_slack, 5, ActionId.RESEND)
    before = len(smtp_server.messages)
    await second.click("U_MALLORY", ActionId.RESEND, resend)  # not an approver
    await fake_slack.wait_for(lambda: any("not an authorised approver" in r for r in
                                          fake_slack.replies_to("U_MALLORY")))
    await second.click("U_ALICE", ActionId.RESEND, resend)  # the initiator
    await fake_slack.wait_for(lambda: any("you started this rollback" in r for r in
                                          fake_slack.replies_to("U_ALICE")))
    assert "Resend approvals* 0/2" in message_text(resend)
    await second.click("U_BOB", ActionId.RESEND, resend)
    await fake_slack.wait_for(lambda: "Resend approvals* 1/2" in message_text(resend))
    assert "U_MALLORY" not in message_text(resend) and "U_ALICE" not in message_text(resend)
    assert len(smtp_server.messages) == before, "one approval sends nothing"
    await second.click("U_BOB", ActionId.RESEND, resend)  # twice counts once
    assert len(smtp_server.messages) == before

    await second.click("U_CAROL", ActionId.RESEND, resend)
    await fake_slack.wait_for(lambda: "completed" in message_text(board(fake_slack))
                              and "unconfirmed deliveries" not in message_text(board(fake_slack)),
                              within=60)
    for client in contacts:
        assert len(smtp_server.to(client.email)) == 1, client.email
    assert len(smtp_server.messages) == before + 3
    refusals = [r for r in fake_slack.calls if r.error == "invalid_blocks"]
    assert refusals == [], "the Resend button and its confirm pass Block Kit's checks"
