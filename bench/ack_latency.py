"""Ack latency of the HTTP app: signed slash commands and button clicks, as Slack sends them.

The app under test is a real `rollback-bot serve --http` process; the load generator (20
concurrent clients, 1,000 requests: half `/rollback-phase3 help`, half Approve clicks on a stale
button, which the bot refuses) and the fake Slack Web API run in this process, so they do not
share the app's event loop. The time from sending a request to its answer is what Slack's
3-second deadline applies to; the time to the bot's ephemeral reply (what the person then sees)
is reported beside it, each reply matched to its request.

    python -m bench.ack_latency [--requests 1000 --concurrency 20 --warmup 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp

from bench.rotation import ADMIN, admin
from bot.db.migrate import upgrade_to_head
from bot.rehearsal.postgres import free_port
from bot.slack.actions import ActionId, ButtonValue
from bot.urls import with_database
from tests.crash.bot_process import wait_healthy
from tests.slackwire.fake_web_api import start_fake_slack
from tests.slackwire.requests import block_actions, sign, slash_command

SECRET = "bench-secret"
BIN = Path(sys.prefix) / "bin" / "rollback-bot"


def request(n: int) -> tuple[str, bytes]:
    """Request n and the tag its reply carries: the user for help, the thread for a click."""
    if n % 2 == 0:
        return f"U_H{n}", slash_command("help", f"U_H{n}", "C_ONCALL", "oncall-engineering")
    stale = ButtonValue(run_id=str(uuid.uuid4()), execution_id=str(uuid.uuid4()),
                        fingerprint="f").to_value()
    return f"1.{n}", block_actions("U_BOB", ActionId.APPROVE.value, stale, "C_ONCALL", "1.1",
                                   f"1.{n}")


def reply_tag(args: dict[str, object]) -> str:
    return str(args.get("thread_ts") or args.get("user"))


def percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return (statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.99) - 1)],
            ordered[-1])


class Load:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.sent_at: dict[str, float] = {}


async def load(url: str, requests: list[tuple[str, bytes]], concurrency: int) -> Load:
    result = Load()
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)

    async def client(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            tag, body = queue.get_nowait()
            headers = sign(body, SECRET)
            started = result.sent_at[tag] = time.monotonic()
            async with http.post(url, data=body, headers=headers) as answer:
                await answer.read()
            result.latencies.append((time.monotonic() - started) * 1000)
            result.statuses[answer.status] = result.statuses.get(answer.status, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return result


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=50,
                        help="requests sent first and not counted (connections, caches)")
    parser.add_argument("--reply-concurrency", type=int, default=None,
                        help="SLACK_REPLY_CONCURRENCY for the app (default: its own default)")
    args = parser.parse_args()
    name = f"bench_ack_{uuid.uuid4().hex[:6]}"
    await admin(f'CREATE DATABASE "{name}"')
    db_url = with_database(ADMIN, name)
    fake, fake_runner = await start_fake_slack()
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE"))},
           "DATABASE_URL": db_url, "SLACK_BOT_TOKEN": "xoxb-bench",
           "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": fake.url,
           "ROLLBACK_CHANNEL": "oncall-engineering", "APPROVER_USER_IDS": "U_ALICE,U_BOB,U_CAROL",
           "LOG_LEVEL": "WARNING"}
    if args.reply_concurrency is not None:
        env["SLACK_REPLY_CONCURRENCY"] = str(args.reply_concurrency)
    process: subprocess.Popen[bytes] | None = None
    try:
        await upgrade_to_head(db_url)
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, before any timing
            [str(BIN), "serve", "--http", "--host", "127.0.0.1", "--port", str(port)], env=env)
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url, process)
        await load(f"{url}/slack/events",
                   [request(-n - 1) for n in range(args.warmup)], args.concurrency)
        warm = len(fake.calls)
        run = await load(f"{url}/slack/events", [request(n) for n in range(args.requests)],
                         args.concurrency)
        replies: dict[str, float] = {}
        async with asyncio.timeout(60):  # every request gets its reply
            while len(replies) < args.requests:
                await asyncio.sleep(0.05)
                replies = {reply_tag(c.args): c.at for c in fake.calls[warm:]
                           if c.method == "chat.postEphemeral"}
        reply_ms = [(at - run.sent_at[tag]) * 1000 for tag, at in replies.items()
                    if tag in run.sent_at]
        print(f"Ack latency: a `rollback-bot serve --http` process, {args.requests:,} requests "
              f"after {args.warmup} warm-up, {args.concurrency} concurrent clients "
              f"(statuses {run.statuses}; replies {len(reply_ms):,})\n")
        print("| | p50 | p99 | max |\n|---|---|---|---|")
        for label, values in (("request -> ack (HTTP 200)", run.latencies),
                              ("request -> ephemeral reply", reply_ms)):
            p50, p99, top = percentiles(values)
            print(f"| {label} | {p50:.1f} ms | {p99:.1f} ms | {top:.1f} ms |")
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        await fake_runner.cleanup()
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
