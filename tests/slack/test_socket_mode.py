"""The default transport: Socket Mode against a local server speaking Slack's envelopes."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.engine.engine import Engine
from bot.settings import Settings
from bot.slack.app import build_slack_front
from tests.engine.fake_steps import as_steps, scripted_steps
from tests.slack.harness import CHANNEL, CHANNEL_NAME, ENGINEERS
from tests.slackwire.fake_web_api import FakeSlack
from tests.slackwire.requests import slash_command
from tests.slackwire.socket_mode_server import start_socket_mode_server


async def test_slash_command_over_socket_mode_is_acked_and_opens_the_modal(
    fake_slack: FakeSlack, bot_sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    server, runner = await start_socket_mode_server()
    fake_slack.socket_url = server.url
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, slack_bot_token="xoxb-test", slack_app_token="xapp-test",
        slack_api_url=fake_slack.url, rollback_channel=CHANNEL_NAME,
        approver_user_ids=",".join(ENGINEERS))
    engine = Engine(bot_sessionmaker, settings, as_steps(scripted_steps()))
    front = build_slack_front(engine, settings, http=False)
    handler = AsyncSocketModeHandler(front.app, "xapp-test")
    try:
        await handler.connect_async()
        await asyncio.wait_for(server.connected.wait(), 10)
        payload = dict(parse_qsl(slash_command("Phase 3 broke auth", "U_ALICE", CHANNEL,
                                               CHANNEL_NAME).decode()))
        envelope = await server.push("slash_commands", payload)
        await fake_slack.wait_for(lambda: envelope in server.acks, within=10)
        await fake_slack.wait_for(lambda: fake_slack.calls_to("views.open"))
        form = await fake_slack.wait_for(lambda: [c for c in fake_slack.calls_to("views.update")
                                                  if c.error is None])
        assert "Phase 3 broke auth" in str(form[0].args["view"])
        connect = fake_slack.calls_to("apps.connections.open")
        assert connect, "the client asked the Web API for its WebSocket URL"
    finally:
        await handler.close_async()
        await front.close()
        await engine.shutdown()
        await runner.cleanup()
