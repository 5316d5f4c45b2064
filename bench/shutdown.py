"""Time from SIGTERM to exit of `rollback-bot serve --http`: idle, and right after a burst.

A real serve process on a live run (step 1 waiting for approvals, as `bench.ack_latency`), the
fake Slack Web API in this process. Idle: SIGTERM with nothing in flight. After a burst:
`--requests` of `bench.ack_mix`'s mix at `--concurrency`, and SIGTERM the moment the last
answer arrives, while the clicks it acked are still being processed. For each: seconds to exit,
the exit code, whether the log says a coroutine was never awaited, and how many acked clicks
a replacement finds unprocessed in the inbox (handed over) or already done. A third case holds
Slack's `response_url` unanswered through the burst and the stop (Slack slow in an incident):
the acked work cannot finish, and the deadline alone ends it.

    python -m bench.shutdown [--requests 200 --concurrency 100 --repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from bench.ack_latency import burst, live_step
from bench.ack_mix import request
from bench.rotation import ADMIN, admin
from bot.db.migrate import upgrade_to_head
from bot.rehearsal.postgres import free_port
from bot.urls import libpq_url, with_database
from sandbox.migrate import migrate
from sandbox.seed import seed
from tests.crash.bot_process import wait_healthy
from tests.slack.harness import SECRET
from tests.slackwire.fake_web_api import FakeSlack, Message, start_fake_slack

BIN = Path(sys.prefix) / "bin" / "rollback-bot"
NEVER_AWAITED = "was never awaited"


async def inbox_left(bot_url: str) -> int:
    conn = await asyncpg.connect(libpq_url(bot_url))
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM engine_inbox WHERE processed_at IS NULL"))
    finally:
        await conn.close()


class Serve:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.process = subprocess.Popen(
            [str(BIN), "serve", "--http", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)

    async def stop(self, limit: float = 60) -> tuple[float, int | None]:
        """Seconds from SIGTERM to exit, and the exit code (None: SIGKILLed after `limit`)."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = await asyncio.to_thread(self.process.wait, limit)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = None
        return time.monotonic() - sent, code

    def never_awaited(self) -> int:
        return self.log.read_text(errors="replace").count(NEVER_AWAITED)


async def once(env: dict[str, str], work: Path, fake: FakeSlack, step: Message | None,
               requests: int, concurrency: int, counter: list[int], slack_slow: bool
               ) -> tuple[float, int | None, int, Message]:
    serve = Serve(env, work / f"serve-{counter[0]}.log")
    await wait_healthy(serve.url, serve.process)
    if step is None:
        step = await live_step(serve.url, fake)
    held = fake.hold("response_url") if slack_slow else None
    if requests:
        mix = [request(counter[0] * requests + n, step, fake) for n in range(requests)]
        await burst(f"{serve.url}/slack/events", mix, concurrency)
    counter[0] += 1
    seconds, code = await serve.stop()
    if held is not None:
        held.set()
        del fake.held["response_url"]
    return seconds, code, serve.never_awaited(), step


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:6]
    bot_db, target_db = f"bench_stop_{tag}", f"bench_stop_target_{tag}"
    await admin(f'CREATE DATABASE "{bot_db}"')
    await admin(f'CREATE DATABASE "{target_db}"')
    fake, fake_runner = await start_fake_slack()
    try:
        bot_url, target_url = with_database(ADMIN, bot_db), with_database(ADMIN, target_db)
        await upgrade_to_head(bot_url)
        await migrate(target_url, "head")
        work = Path(tempfile.mkdtemp(prefix="bench-stop-"))
        await seed(target_url, 6, sessions_per_client=3, assistants_per_client=1,
                   without_contact=1, directory_csv=work / "clients.csv")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE"))},
               "DATABASE_URL": bot_url, "SLACK_BOT_TOKEN": "xoxb-bench",
               "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": fake.url,
               "ROLLBACK_CHANNEL": "oncall-engineering",
               "APPROVER_USER_IDS": "U_ALICE,U_BOB,U_CAROL",
               "TARGET_DATABASE_URL": target_url, "BACKUP_DIR": str(work / "backups")}
        counter = [0]
        step: Message | None = None
        rows = []
        after = f"right after {args.requests} requests at {args.concurrency} concurrent"
        for label, requests, slow in (("idle", 0, False), (after, args.requests, False),
                                      (after + ", Slack's response_url hanging",
                                       args.requests, True)):
            times, codes, warned, left = [], [], 0, []
            for _ in range(args.repeat):
                seconds, code, never, step = await once(env, work, fake, step, requests,
                                                        args.concurrency, counter, slow)
                times.append(seconds)
                codes.append(code)
                warned += never
                left.append(await inbox_left(bot_url))
            rows.append(f"| {label} | {statistics.median(times):.2f} s | {max(times):.2f} s | "
                        f"{', '.join('killed' if c is None else str(c) for c in codes)} | "
                        f"{warned} | {max(left)} |")
        print(f"SIGTERM to exit, {args.repeat} runs each (nproc {os.cpu_count()}, load average "
              f"{os.getloadavg()[0]:.1f})\n")
        print("| when | median | max | exit codes | never-awaited warnings | inbox rows "
              "unprocessed at exit (max) |\n|---|---|---|---|---|---|")
        print("\n".join(rows))
        # Nothing acked may be left behind for good: a replacement takes what was handed over.
        last = Serve(env, work / "replacement.log")
        await wait_healthy(last.url, last.process)
        for _ in range(300):  # a minute at most; a lapsed claim takes PLAN_TIMEOUT + 10 s
            if not await inbox_left(bot_url):
                break
            await asyncio.sleep(0.2)
        print(f"\nafter a replacement started: {await inbox_left(bot_url)} clicks unprocessed")
        await last.stop()
    finally:
        await fake_runner.cleanup()
        for name in (bot_db, target_db):
            await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
