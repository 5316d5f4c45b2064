"""Bare Bolt: the baseline `bench.ack_latency` sets our ack latency against.

The same Bolt (`AsyncApp`, `process_before_response`, signatures verified) behind the same
aiohttp adapter as `rollback-bot serve --http` (`bot.slack.http.build_web_app`), with listeners
that only ack: what answering Slack costs before any work of ours.

    python -m bench.bare_bolt --port 8123 --secret S --api-url http://127.0.0.1:9/api/
"""

from __future__ import annotations

import argparse
import asyncio
import re
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.http import build_web_app

ANYTHING = re.compile(".*")


def bare_app(secret: str, api_url: str) -> AsyncApp:
    client = AsyncWebClient(token="xoxb-bare", base_url=api_url, session=aiohttp.ClientSession())
    app = AsyncApp(client=client, signing_secret=secret, process_before_response=True)

    async def only_ack(ack: Any) -> None:
        await ack()

    app.command(ANYTHING)(only_ack)
    app.action(ANYTHING)(only_ack)
    app.view(ANYTHING)(only_ack)
    return app


async def serve(port: int, secret: str, api_url: str) -> None:
    runner = web.AppRunner(build_web_app(bare_app(secret, api_url)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--api-url", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.secret, args.api_url))


if __name__ == "__main__":
    main()
