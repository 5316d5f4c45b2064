"""Ack latency under a burst: bare Bolt and `rollback-bot serve --http` side by side.

Both are real processes behind the same aiohttp adapter (`bench.bare_bolt` only acks). The load
generator and the fake Slack Web API run in this process, so they do not share an app's event
loop. The same mix (`bench.ack_mix`: Approve clicks on a live run's step, slash commands,
Reject reasons submitted) goes to each, at each concurrency, bare first; the time from sending
a request to its HTTP answer is what Slack's 3-second deadline applies to. For ours also: every
non-200, how long the replies (by `response_url`) take to drain after the last ack, whether each
person's replies came in the order their requests were answered, and the process's RSS idle and
after each burst.

    python -m bench.ack_latency [--requests 1000 --concurrency 20,100 --warmup 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.ack_mix import APPROVED_ALREADY, BenchRequest, request
from bench.rotation import ADMIN, admin
from bot.db.migrate import upgrade_to_head
from bot.rehearsal.postgres import free_port
from bot.slack.actions import ActionId
from bot.urls import with_database
from sandbox.migrate import migrate
from sandbox.seed import seed
from tests.crash.bot_process import start_run, step_message, wait_healthy
from tests.slack.harness import CHANNEL, SECRET, button_value, message_text
from tests.slackwire.fake_web_api import FakeSlack, Message, start_fake_slack
from tests.slackwire.requests import block_actions, sign

BIN = Path(sys.prefix) / "bin" / "rollback-bot"


def percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return (statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.99) - 1)],
            ordered[-1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Burst:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    answered_at: dict[str, float] = field(default_factory=dict)  # reply_to -> ack received
    last_answer: float = 0.0


async def burst(url: str, requests: list[BenchRequest], concurrency: int) -> Burst:
    result = Burst()
    queue: asyncio.Queue[BenchRequest] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)

    async def client(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            item = queue.get_nowait()
            started = time.monotonic()
            async with http.post(url, data=item.body, headers=sign(item.body, SECRET)) as answer:
                await answer.read()
            done = time.monotonic()
            result.latencies.append((done - started) * 1000)
            result.statuses[answer.status] = result.statuses.get(answer.status, 0) + 1
            if item.reply_to:
                result.answered_at[item.reply_to] = done
            result.last_answer = max(result.last_answer, done)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return result


def out_of_order(fake: FakeSlack, requests: list[BenchRequest], run: Burst) -> int:
    """People whose replies did not arrive in the order their requests were answered."""
    arrived = {r.url_id: i for i, r in enumerate(fake.responses)}
    wrong = 0
    for user in {r.user for r in requests}:
        mine = sorted((run.answered_at[r.reply_to], arrived[r.reply_to]) for r in requests
                      if r.user == user and r.reply_to in arrived and r.reply_to in run.answered_at)
        order = [position for _, position in mine]
        wrong += order != sorted(order)
    return wrong


async def live_step(url: str, fake: FakeSlack) -> Message:
    """A run waiting for step 1's approvals, already approved once by APPROVED_ALREADY."""

    class Poster:
        async def post(self, body: bytes) -> int:
            async with aiohttp.ClientSession() as http, \
                    http.post(f"{url}/slack/events", data=body,
                              headers=sign(body, SECRET)) as answer:
                return answer.status

    await start_run(Poster())  # type: ignore[arg-type]
    step = await step_message(fake, 1, ActionId.APPROVE)
    await Poster().post(block_actions(APPROVED_ALREADY, ActionId.APPROVE.value,
                                      button_value(step, ActionId.APPROVE) or "", CHANNEL,
                                      step.ts, step.thread_ts))
    await fake.wait_for(lambda: APPROVED_ALREADY in message_text(step), within=30)
    return step


def row(label: str, values: list[float], baseline: float | None = None) -> str:
    p50, p99, top = percentiles(values)
    ratio = f"{p99 / baseline:.1f}×" if baseline else "—"
    return f"| {label} | {p50:.1f} ms | {p99:.1f} ms | {top:.1f} ms | {ratio} |"


async def measure(args: argparse.Namespace, fake: FakeSlack, bare_url: str, ours_url: str,
                  pid: int, step: Message) -> None:
    counter = iter(range(10**9))

    def mix(count: int) -> list[BenchRequest]:
        return [request(next(counter), step, fake) for _ in range(count)]

    print(f"Idle RSS of serve (live run, before any burst): {rss_mb(pid):.0f} MB\n")
    print("| concurrency | app | p50 | p99 | max | p99 / bare |\n|---|---|---|---|---|---|")
    notes = []
    for concurrency in args.concurrency:
        await burst(f"{bare_url}/slack/events", mix(args.warmup), concurrency)
        bare = await burst(f"{bare_url}/slack/events", mix(args.requests), concurrency)
        await burst(f"{ours_url}/slack/events", mix(args.warmup), concurrency)
        await settle(fake, [])
        sent = mix(args.requests)
        ours = await burst(f"{ours_url}/slack/events", sent, concurrency)
        drained, missing = await settle(fake, [r.reply_to for r in sent if r.reply_to])
        bare_p99 = percentiles(bare.latencies)[1]
        print(row(f"{concurrency} | bare Bolt", bare.latencies))
        print(row(f"{concurrency} | rollback-bot serve", ours.latencies, bare_p99))
        notes.append(f"{concurrency} concurrent: statuses bare {bare.statuses}, ours "
                     f"{ours.statuses}; replies drained {drained - ours.last_answer:.1f} s after "
                     f"the last ack, {missing} never came; people with replies out of order: "
                     f"{out_of_order(fake, sent, ours)} of {len({r.user for r in sent})}; "
                     f"RSS after the burst {rss_mb(pid):.0f} MB")
    print("\n" + "\n".join(notes))


async def settle(fake: FakeSlack, reply_to: list[str], within: float = 60
                 ) -> tuple[float, int]:
    """When the last of these replies arrived, and how many had not after `within` s."""
    wanted = set(reply_to)
    deadline = time.monotonic() + within
    while True:
        arrived = {r.url_id: r.at for r in fake.responses if r.url_id in wanted}
        if len(arrived) == len(wanted) or time.monotonic() > deadline:
            return max(arrived.values(), default=time.monotonic()), len(wanted) - len(arrived)
        await asyncio.sleep(0.05)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")],
                        default=[20, 100])
    parser.add_argument("--warmup", type=int, default=50,
                        help="requests sent first and not counted (connections, caches)")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:6]
    bot_db, target_db = f"bench_ack_{tag}", f"bench_ack_target_{tag}"
    await admin(f'CREATE DATABASE "{bot_db}"')
    await admin(f'CREATE DATABASE "{target_db}"')
    fake, fake_runner = await start_fake_slack()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        bot_url, target_url = with_database(ADMIN, bot_db), with_database(ADMIN, target_db)
        await upgrade_to_head(bot_url)
        await migrate(target_url, "head")
        work = Path(tempfile.mkdtemp(prefix="bench-ack-"))
        await seed(target_url, 6, sessions_per_client=3, assistants_per_client=1,
                   without_contact=1, directory_csv=work / "clients.csv")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE"))},
               "DATABASE_URL": bot_url, "SLACK_BOT_TOKEN": "xoxb-bench",
               "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": fake.url,
               "ROLLBACK_CHANNEL": "oncall-engineering",
               "APPROVER_USER_IDS": "U_ALICE,U_BOB,U_CAROL", "LOG_LEVEL": "WARNING",
               "TARGET_DATABASE_URL": target_url, "BACKUP_DIR": str(work / "backups")}
        bare_port, ours_port = free_port(), free_port()
        processes.append(subprocess.Popen(  # noqa: ASYNC220 - started before any timing
            [sys.executable, "-m", "bench.bare_bolt", "--port", str(bare_port), "--secret",
             SECRET, "--api-url", fake.url]))
        ours = subprocess.Popen(  # noqa: ASYNC220 - started before any timing
            [str(BIN), "serve", "--http", "--host", "127.0.0.1", "--port", str(ours_port)],
            env=env)
        processes.append(ours)
        bare_url, ours_url = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{ours_port}"
        await wait_healthy(ours_url, ours)
        await wait_bare(bare_url, processes[0])
        step = await live_step(ours_url, fake)
        print(f"Ack latency, {args.requests:,} requests per burst after {args.warmup} warm-up "
              f"(serve pid {ours.pid}; load average {os.getloadavg()[0]:.1f})\n")
        await measure(args, fake, bare_url, ours_url, ours.pid, step)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        await fake_runner.cleanup()
        for name in (bot_db, target_db):
            await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def wait_bare(url: str, process: subprocess.Popen[bytes]) -> None:
    """Bare Bolt has no /health: until its port answers at all."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while True:
            assert process.poll() is None, "bare Bolt exited"
            try:
                async with http.get(f"{url}/slack/events"):
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main())
