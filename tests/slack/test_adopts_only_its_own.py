"""The thread writer adopts only the bot's own messages and files: a message another app
posted with the bot's metadata, or a file someone else shared under the bot's file name and
title, is not taken for the bot's (it would otherwise be edited, or never posted). The fake Web
API shows who posted each message and uploaded each file as Slack does (`bot_id`, `app_id`, the
file's `user`), and the bot learns its own ids from auth.test."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.thread_writer import Identity, ThreadReader
from tests.slackwire.fake_web_api import FakeSlack
from tests.slackwire.workspace import Message

CHANNEL = "C_ONCALL"
RUN = "0d5f3c9e-0000-4000-8000-000000000001"


async def test_a_forged_copy_is_not_adopted_the_bots_own_is(fake_slack: FakeSlack) -> None:
    client = AsyncWebClient(token="xoxb-test-token", base_url=fake_slack.url)
    root = await client.chat_postMessage(channel=CHANNEL, text="Phase 3 rollback",
                                         metadata=Identity(RUN, "board").metadata())
    step = Identity(RUN, "step", "backup", 1)
    forged = Message(CHANNEL, fake_slack.next_ts(), str(root["ts"]), "Step 1/6: backup", [],
                     user="U_IMPOSTOR_BOT", metadata=step.metadata(), bot_id="B_OTHER",
                     app_id="A_OTHER")
    person = Message(CHANNEL, fake_slack.next_ts(), str(root["ts"]), "Step 1/6: backup", [],
                     user="U_MALLORY", metadata=step.metadata())
    for message in (forged, person):
        fake_slack.workspace.messages[message.ts] = message
    reader = ThreadReader(client)
    found = await reader.thread(CHANNEL, str(root["ts"]))
    assert step not in found.messages, "another app's or a person's message is not ours"
    assert found.messages[Identity(RUN, "board")] == root["ts"]

    ours = await client.chat_postMessage(channel=CHANNEL, thread_ts=root["ts"],
                                         text="Step 1/6: backup", metadata=step.metadata())
    await client.files_upload_v2(channel=CHANNEL, thread_ts=root["ts"],
                                 filename="backup-output.log", title="backup output",
                                 content="line\n")
    upload = next(iter(fake_slack.uploads.values()))
    upload["user"] = "U_MALLORY"  # as if Mallory had shared a file of that name and title
    found = await reader.thread(CHANNEL, str(root["ts"]))
    assert found.messages[step] == ours["ts"], "the bot's own copy is adopted"
    assert ("backup-output.log", "backup output") not in found.files
    upload["user"] = "UBOT"
    found = await reader.thread(CHANNEL, str(root["ts"]))
    assert ("backup-output.log", "backup output") in found.files
    assert [c.method for c in fake_slack.calls if c.method == "auth.test"] == ["auth.test"]
