"""The thread's write budget: a step printing LINES lines as fast as it can, against the fake Slack.

Reported: Slack writes per second to the channel while the step runs (goal ≤ 1/s sustained),
the lag between a line being printed and Slack showing it (goal ≤ 2 s), and whether the file
attached at the end holds every line (goal: 0 lost).

    python -m bench.thread_budget [--lines 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field

from bench.rotation import ADMIN, admin
from bot.db.migrate import upgrade_to_head
from bot.db.session import make_engine, make_sessionmaker
from bot.db.urls import with_database
from bot.domain.events import Source
from bot.domain.steps import StepName
from bot.engine.engine import Actor, Click, Engine
from bot.settings import Settings
from bot.slack.app import build_slack_front
from steps.protocol import Outcome, OutputSink, StepContext
from tests.engine.fake_steps import ScriptedStep, scripted_steps
from tests.slackwire.fake_web_api import start_fake_slack

LINE = re.compile(r"\bline (\d+)\b")
WRITES = ("chat.postMessage", "chat.update", "files.getUploadURLExternal")


@dataclass
class Firehose(ScriptedStep):
    """Prints `count` numbered lines as fast as it can, remembering when each was printed."""

    count: int = 100_000
    printed_at: dict[int, float] = field(default_factory=dict)

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        for n in range(1, self.count + 1):
            emit(f"line {n}")
            self.printed_at[n] = time.monotonic()
            if n % 1000 == 0:
                await asyncio.sleep(0)  # a real process's output arrives between awaits
        return Outcome(summary=f"{self.count} lines")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    name = f"bench_thread_{uuid.uuid4().hex[:6]}"
    await admin(f'CREATE DATABASE "{name}"')
    url = with_database(ADMIN, name)
    fake, fake_runner = await start_fake_slack()
    db = make_engine(url)
    try:
        await upgrade_to_head(url)
        steps = scripted_steps()
        hose = Firehose(StepName.BACKUP, count=args.lines)
        steps[StepName.BACKUP] = hose
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, slack_bot_token="xoxb-bench", slack_signing_secret="s",
            slack_api_url=fake.url, rollback_channel="C1")
        engine = Engine(make_sessionmaker(db), settings, dict(steps))
        front = build_slack_front(engine, settings, http=True)
        front.mirror.start()
        run_id = (await engine.start_run(Actor("U1", "a", Source.SLACK, True), "bench",
                                         "C1")).run_id
        assert run_id
        view = await engine.run_view(run_id)
        execution = view.steps[0]
        assert execution.execution_id and execution.plan
        for user in ("U2", "U3"):
            await engine.approve(Click(Actor(user, user, Source.SLACK, True), run_id,
                                       execution.execution_id, execution.plan.fingerprint))
        started = time.monotonic()
        seen_at: dict[int, float] = {}
        while True:  # watch what Slack shows, as a person in the channel would
            for message in fake.messages.values():
                for block in message.blocks:
                    text = block.get("text", {}).get("text", "")
                    for number in LINE.findall(text):
                        seen_at.setdefault(int(number), time.monotonic())
            upload = [u for u in fake.uploads.values() if u.get("content")]
            if upload:
                break
            await asyncio.sleep(0.02)
        ended = time.monotonic()
        writes = [c.at for c in fake.calls if c.method in WRITES]
        running = [t for t in writes if started <= t <= ended]
        lags = [seen_at[n] - hose.printed_at[n] for n in seen_at if n in hose.printed_at]
        lines = upload[0]["content"].splitlines()
        expected = [f"line {n}" for n in range(1, args.lines + 1)]
        print(f"Thread write budget: a step printing {args.lines:,} lines\n")
        print(f"| step + thread, start to attached file | {ended - started:.1f} s |")
        print(f"| Slack writes while running | {len(running)} "
              f"({len(running) / max(ended - started, 1e-9):.2f}/s) |")
        if lags:
            print(f"| lag printed -> shown in the step message (max) | {max(lags):.2f} s |")
        print(f"| last line printed -> full log attached in the thread | "
              f"{ended - hose.printed_at[args.lines]:.2f} s |")
        print(f"| attached log | {len(lines):,} lines, "
              f"{'complete' if lines == expected else 'INCOMPLETE'} |")
        await front.close()
        await engine.shutdown()
    finally:
        await db.dispose()
        await fake_runner.cleanup()
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
