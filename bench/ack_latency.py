"""Ack latency of the HTTP app: signed slash commands and button clicks, as Slack sends them.

20 concurrent clients send 1,000 requests in all (half `/rollback-phase3 help`, half Approve
clicks on a stale button, which the bot refuses); the time from sending a request to its answer
is what Slack's 3-second deadline applies to.

    python -m bench.ack_latency [--requests 1000 --concurrency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import aiohttp

from bench.rotation import ADMIN, admin
from bot.db.migrate import upgrade_to_head
from bot.db.session import make_engine, make_sessionmaker
from bot.db.urls import with_database
from bot.engine.engine import Engine
from bot.settings import Settings
from bot.slack.actions import ActionId, ButtonValue
from bot.slack.app import build_slack_front
from bot.slack.http import build_web_app
from tests.engine.fake_steps import as_steps, scripted_steps
from tests.slackwire.fake_web_api import start_fake_slack
from tests.slackwire.requests import block_actions, sign, slash_command
from tests.slackwire.serve import serve_on_free_port

SECRET = "bench-secret"


def request_body(n: int) -> bytes:
    if n % 2 == 0:
        return slash_command("help", "U_ALICE", "C_ONCALL", "oncall-engineering")
    stale = ButtonValue(run_id=str(uuid.uuid4()), execution_id=str(uuid.uuid4()),
                        fingerprint="f").to_value()
    return block_actions("U_BOB", ActionId.APPROVE.value, stale, "C_ONCALL", "1.1", "1.0")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    name = f"bench_ack_{uuid.uuid4().hex[:6]}"
    await admin(f'CREATE DATABASE "{name}"')
    db_url = with_database(ADMIN, name)
    fake, fake_runner = await start_fake_slack()
    db = make_engine(db_url)
    try:
        await upgrade_to_head(db_url)
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, slack_bot_token="xoxb-bench", slack_signing_secret=SECRET,
            slack_api_url=fake.url, rollback_channel="oncall-engineering",
            approver_user_ids="U_ALICE,U_BOB,U_CAROL")
        engine = Engine(make_sessionmaker(db), settings, as_steps(scripted_steps()))
        front = build_slack_front(engine, settings, http=True)
        runner, port = await serve_on_free_port(build_web_app(front.app))
        url = f"http://127.0.0.1:{port}/slack/events"
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(args.requests):
            queue.put_nowait(n)

        async def client(http: aiohttp.ClientSession) -> None:
            while not queue.empty():
                n = queue.get_nowait()
                body = request_body(n)
                headers = sign(body, SECRET)
                started = time.perf_counter()
                async with http.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[answer.status] = statuses.get(answer.status, 0) + 1

        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(client(http) for _ in range(args.concurrency)))
        await asyncio.sleep(1)  # let the background replies finish before closing
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"Ack latency: {args.requests:,} requests, {args.concurrency} concurrent clients "
              f"(statuses {statuses})\n")
        print(f"| p50 | {statistics.median(latencies):.1f} ms |")
        print(f"| p99 | {p99:.1f} ms |")
        print(f"| max | {latencies[-1]:.1f} ms |")
        await runner.cleanup()
        await engine.shutdown()
    finally:
        await db.dispose()
        await fake_runner.cleanup()
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
