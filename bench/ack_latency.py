"""Ack latency of the HTTP app: signed slash commands and button clicks, as Slack sends them.

The app under test is a real `rollback-bot serve --http` process; the load generator (20
concurrent clients, 1,000 requests: `/rollback-phase3 help`, Approve clicks on a stale button,
which the bot refuses, and every tenth a start command, which opens the start modal) and the
fake Slack Web API run in this process, so they do not share the app's event loop. The time
from sending a request to its answer is what Slack's 3-second deadline applies to. Beside it:
the time to the refusal a click gets by its `response_url` (what the person then sees; help is
answered in the ack itself), and the time to `views.open` for a start command, which must come
within the 3 seconds of the request's `trigger_id`.

    python -m bench.ack_latency [--requests 1000 --concurrency 20 --warmup 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qsl

import aiohttp

from bench.rotation import ADMIN, admin
from bot.db.migrate import upgrade_to_head
from bot.rehearsal.postgres import free_port
from bot.slack.actions import ActionId, ButtonValue
from bot.urls import with_database
from tests.crash.bot_process import wait_healthy
from tests.slackwire.fake_web_api import FakeSlack, start_fake_slack
from tests.slackwire.requests import block_actions, sign, slash_command, trigger_in

SECRET = "bench-secret"
BIN = Path(sys.prefix) / "bin" / "rollback-bot"
ENGINEERS = ("U_ALICE", "U_BOB", "U_CAROL")


START_EVERY = 10


def request(n: int) -> tuple[str, bytes]:
    """Request n and what the bot answers it with: `start`, `help` (in the ack) or `click`."""
    if START_EVERY and n % START_EVERY == 0:
        return "start", slash_command("Phase 3 broke auth", ENGINEERS[n % 3], "C_ONCALL",
                                      "oncall-engineering")
    if n % 2 == 0:
        return "help", slash_command("help", ENGINEERS[n % 3], "C_ONCALL", "oncall-engineering")
    stale = ButtonValue(run_id=str(uuid.uuid4()), execution_id=str(uuid.uuid4()),
                        fingerprint="f").to_value()
    return "click", block_actions("U_BOB", ActionId.APPROVE.value, stale, "C_ONCALL", "1.1",
                                  f"1.{n}")


def response_url_id(body: bytes) -> str:
    form = dict(parse_qsl(body.decode()))
    url = json.loads(form["payload"])["response_url"] if "payload" in form \
        else form["response_url"]
    return str(url).rsplit("/", 1)[-1]


def percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return (statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.99) - 1)],
            ordered[-1])


class Load:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.sent_at: dict[str, float] = {}  # response_url id or trigger_id -> sent at
        self.kinds: dict[str, int] = {}


async def load(fake: FakeSlack, url: str, requests: list[tuple[str, bytes]], concurrency: int
               ) -> Load:
    result = Load()
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)

    async def client(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            kind, body = queue.get_nowait()
            result.kinds[kind] = result.kinds.get(kind, 0) + 1
            headers = sign(body, SECRET)
            trigger = trigger_in(body) or ""
            fake.restamp_trigger(trigger)  # its 3 s start now, as Slack's would
            started = time.monotonic()
            result.sent_at[trigger if kind == "start" else response_url_id(body)] = started
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
    parser.add_argument("--start-every", type=int, default=START_EVERY,
                        help="every n-th request is a start command (0: none)")
    args = parser.parse_args()
    globals()["START_EVERY"] = args.start_every
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
        await load(fake, f"{url}/slack/events",
                   [request(-n - 1) for n in range(args.warmup)], args.concurrency)
        warm = len(fake.calls)
        run = await load(fake, f"{url}/slack/events",
                         [request(n) for n in range(args.requests)], args.concurrency)
        clicks, starts = run.kinds.get("click", 0), run.kinds.get("start", 0)
        replies: dict[str, float] = {}
        opened: dict[str, float] = {}
        async with asyncio.timeout(60):  # every click gets its refusal, every start its modal
            while len(replies) < clicks or len(opened) < starts:
                await asyncio.sleep(0.05)
                replies = {r.url_id: r.at for r in fake.responses if r.url_id in run.sent_at}
                opened = {str(c.args.get("trigger_id")): c.at for c in fake.calls[warm:]
                          if c.method == "views.open"}
        expired = [c for c in fake.calls[warm:] if c.method == "views.open"
                   and c.error == "expired_trigger_id"]
        reply_ms = [(at - run.sent_at[tag]) * 1000 for tag, at in replies.items()]
        open_ms = [(at - run.sent_at[tag]) * 1000 for tag, at in opened.items()
                   if tag in run.sent_at]
        print(f"Ack latency: a `rollback-bot serve --http` process, {args.requests:,} requests "
              f"({run.kinds}) after {args.warmup} warm-up, {args.concurrency} concurrent "
              f"clients (statuses {run.statuses}; click refusals {len(reply_ms):,}; modals "
              f"{len(open_ms):,}, {len(expired)} too late for their trigger_id)\n")
        print("| | p50 | p99 | max |\n|---|---|---|---|")
        for label, values in (("request -> ack (HTTP 200)", run.latencies),
                              ("request -> refusal by response_url", reply_ms),
                              ("start command -> views.open", open_ms)):
            if not values:
                continue
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
