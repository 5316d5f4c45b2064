"""The fake Web API refuses what Slack refuses, so a green suite means a working workspace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.slackwire import methods
from tests.slackwire.fake_web_api import FakeSlack

CHANNEL = "C_ONCALL"


@pytest.fixture
async def client(fake_slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    async with aiohttp.ClientSession() as session:
        yield AsyncWebClient(token="xoxb-test", base_url=fake_slack.url, session=session)


async def refused(call: Any) -> str:
    with pytest.raises(SlackApiError) as raised:
        await call
    return str(raised.value.response["error"])


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


async def test_membership_archive_and_deleted_messages(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    assert await refused(client.chat_postMessage(channel="C_RANDOM", text="x")) == \
        "not_in_channel"
    assert await refused(client.chat_postEphemeral(channel="C_RANDOM", user="U_ALICE",
                                                   text="x")) == "not_in_channel"
    assert await refused(client.chat_postEphemeral(channel=CHANNEL, user="U_MALLORY",
                                                   text="x")) == "user_not_in_channel"
    dm = fake_slack.workspace.add_dm("U_ALICE", "U_BOB")
    assert await refused(client.chat_postEphemeral(channel=dm.id, user="U_ALICE",
                                                   text="x")) == "channel_not_found"
    assert await refused(client.chat_postMessage(channel="C_NOPE", text="x")) == \
        "channel_not_found"

    posted = await client.chat_postMessage(channel="oncall-engineering", text="root")
    assert posted["channel"] == CHANNEL  # a name is accepted, the id comes back
    reply = await client.chat_postMessage(channel=CHANNEL, thread_ts=posted["ts"], text="r")
    fake_slack.workspace.delete_message(reply["ts"])
    assert await refused(client.chat_update(channel=CHANNEL, ts=reply["ts"], text="y")) == \
        "message_not_found"
    assert await refused(client.chat_delete(channel=CHANNEL, ts=reply["ts"])) == \
        "message_not_found"
    assert await refused(client.chat_getPermalink(channel=CHANNEL,
                                                  message_ts=reply["ts"])) == "message_not_found"
    assert await refused(client.chat_postMessage(channel=CHANNEL, thread_ts="1.2",
                                                 text="x")) == "thread_not_found"

    fake_slack.workspace.archive(CHANNEL)
    assert await refused(client.chat_postMessage(channel=CHANNEL, text="x")) == "is_archived"
    assert await refused(client.chat_update(channel=CHANNEL, ts=posted["ts"], text="y")) == \
        "is_archived"
    info = await client.conversations_info(channel=CHANNEL)
    assert info["channel"]["is_archived"] and info["channel"]["is_member"]


@pytest.mark.parametrize(("blocks", "pointer"), [
    ([section("x")] * 51, "/blocks"),
    ([section("x" * 3001)], "/blocks/0/text/text"),
    ([section("😀" * 1501)], "/blocks/0/text/text"),  # 3,002 UTF-16 units
    ([section("")], "/blocks/0/text/text"),
    ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
     "/blocks/0/text/text"),
    ([{"type": "actions", "elements": [{"type": "button", "action_id": "a", "value": "v",
                                        "text": {"type": "plain_text", "text": "b" * 76}}]}],
     "/blocks/0/elements/0/text/text"),
    ([{"type": "actions", "elements": [{"type": "button", "action_id": "a", "value": "v" * 2001,
                                        "text": {"type": "plain_text", "text": "b"}}]}],
     "/blocks/0/elements/0/value"),
    ([section("x", block_id="b" * 256)], "/blocks/0/block_id"),
    ([section("x", block_id="same"), section("y", block_id="same")], "/blocks/1/block_id"),
    ([{"type": "actions", "elements": [
        {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "1"}},
        {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "2"}}]}],
     "/blocks/0/elements/1/action_id"),
    ([{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}],
     "/blocks/0/elements"),
])
async def test_blocks_outside_block_kit_limits_are_invalid_blocks(
    fake_slack: FakeSlack, client: AsyncWebClient, blocks: list[dict[str, Any]], pointer: str
) -> None:
    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel=CHANNEL, text="fallback", blocks=blocks)
    assert raised.value.response["error"] == "invalid_blocks"
    assert any(f"[json-pointer:{pointer}]" in e for e in raised.value.response["errors"])
    assert fake_slack.messages == {}


async def test_text_limits_and_the_fallback_text(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    assert await refused(client.chat_postMessage(channel=CHANNEL, text="x" * 40001)) == \
        "msg_too_long"
    assert await refused(client.api_call("chat.postMessage", json={"channel": CHANNEL})) == \
        "no_text"
    # Slack takes blocks without a top-level text (the reference only advises one); the fake
    # takes it too and notes it, and the Slack-front harness fails a test that does it.
    await client.api_call("chat.postMessage", json={"channel": CHANNEL,
                                                   "blocks": [section("only blocks")]})
    assert fake_slack.lint and "without a fallback text" in fake_slack.lint[0]


def modal(**changes: Any) -> dict[str, Any]:
    view = {"type": "modal", "callback_id": "c", "title": {"type": "plain_text", "text": "T"},
            "blocks": [section("x")]}
    view.update(changes)
    return view


@pytest.mark.parametrize("view", [
    modal(title={"type": "plain_text", "text": "t" * 25}),
    modal(submit={"type": "plain_text", "text": "s" * 25}),
    modal(close={"type": "plain_text", "text": "c" * 25}),
    modal(private_metadata="m" * 3001),
    modal(blocks=[section("x")] * 101),
])
async def test_views_outside_limits_are_refused(
    fake_slack: FakeSlack, client: AsyncWebClient, view: dict[str, Any]
) -> None:
    assert await refused(client.views_open(trigger_id=fake_slack.issue_trigger(),
                                           view=view)) == "invalid_arguments"


async def test_a_trigger_id_opens_one_view_within_3_seconds(
    fake_slack: FakeSlack, client: AsyncWebClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await refused(client.views_open(trigger_id="made-up", view=modal())) == \
        "invalid_trigger_id"
    trigger = fake_slack.issue_trigger()
    opened = await client.views_open(trigger_id=trigger, view=modal())
    assert await refused(client.views_open(trigger_id=trigger, view=modal())) == \
        "exchanged_trigger_id"
    await client.views_update(view_id=opened["view"]["id"], view=modal(
        title={"type": "plain_text", "text": "Updated"}))
    late = fake_slack.issue_trigger()
    fake_slack.triggers[late] -= methods.TRIGGER_SECONDS + 0.1  # issued 3.1 s ago
    assert await refused(client.views_open(trigger_id=late, view=modal())) == \
        "expired_trigger_id"


async def test_tokens_and_scopes(fake_slack: FakeSlack, client: AsyncWebClient) -> None:
    fake_slack.granted_scopes = {"chat:write"}
    assert await refused(client.usergroups_users_list(usergroup="S1")) == "missing_scope"
    fake_slack.granted_scopes = None
    assert await refused(client.usergroups_users_list(usergroup="S_NOPE")) == "no_such_subteam"
    fake_slack.revoke_token("xoxb-test")
    assert await refused(client.auth_test()) == "token_revoked"
    stranger = AsyncWebClient(token="nope", base_url=fake_slack.url,
                              session=client.session)
    assert await refused(stranger.auth_test()) == "invalid_auth"


async def test_metadata_replies_and_permalink(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    root = await client.chat_postMessage(channel=CHANNEL, text="root")
    metadata = {"event_type": "rollback_step", "event_payload": {"execution_id": "e1"}}
    reply = await client.chat_postMessage(channel=CHANNEL, thread_ts=root["ts"], text="step",
                                          metadata=metadata)
    thread = await client.conversations_replies(channel=CHANNEL, ts=root["ts"],
                                                include_all_metadata=True)
    assert [m["ts"] for m in thread["messages"]] == [root["ts"], reply["ts"]]
    assert thread["messages"][1]["metadata"] == metadata
    plain = await client.conversations_replies(channel=CHANNEL, ts=root["ts"])
    assert "metadata" not in plain["messages"][1]
    link = await client.chat_getPermalink(channel=CHANNEL, message_ts=reply["ts"])
    assert f"/archives/{CHANNEL}/p{reply['ts'].replace('.', '')}" in link["permalink"]
    fake_slack.workspace.delete_message(root["ts"])  # it had a reply: a tombstone stays
    thread = await client.conversations_replies(channel=CHANNEL, ts=root["ts"])
    assert thread["messages"][0]["subtype"] == "tombstone"


async def test_faults_500_429_and_the_lost_answer(
    fake_slack: FakeSlack, client: AsyncWebClient
) -> None:
    fake_slack.fail_next("chat.postMessage", status=500, times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError):
            await client.chat_postMessage(channel=CHANNEL, text="x")
    assert fake_slack.messages == {}
    fake_slack.refuse_next("chat.postMessage", "channel_not_found")
    assert await refused(client.chat_postMessage(channel=CHANNEL, text="x")) == \
        "channel_not_found"
    fake_slack.lose_answer("chat.postMessage")
    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel=CHANNEL, text="applied")
    assert raised.value.response.status_code == 500
    assert [m.text for m in fake_slack.messages.values()] == ["applied"]


async def test_response_urls_take_five_replies(fake_slack: FakeSlack) -> None:
    url = fake_slack.issue_response_url("U_ALICE", "D_1")
    async with aiohttp.ClientSession() as http:
        statuses = []
        for n in range(6):
            async with http.post(url, json={"text": f"reply {n}"}) as answer:
                statuses.append(answer.status)
    assert statuses == [200] * 5 + [404]
    assert fake_slack.replies_to("U_ALICE") == [f"reply {n}" for n in range(5)]
