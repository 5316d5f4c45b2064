"""The thread's write budget: a step printing LINES lines as fast as it can, against the fake Slack.

Reported: Slack writes to the channel (goal ≤ 1/s sustained: the smallest gap between two
writes, and the rate over the run), the lag between a line being printed and Slack showing it
(goal ≤ 2 s) for EVERY line, and whether the attached file holds every line (goal: 0 lost).

A line "appears" when a write puts it in front of people: a step message whose blocks show it
(the live tail) or the attached log once it is shared into the thread
(files.completeUploadExternal). Times are when the fake Web API received those calls.

Two ways the step gets approved:
- "from the message": as people do, once the step's message shows its Approve button;
- "before the thread": through the engine before the thread exists (the terminal front, or
  the worst case: the root and the step's message are still ahead in the write queue).

    python -m bench.thread_budget [--lines 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import time
import uuid
from dataclasses import dataclass, field

from bench.rotation import ADMIN, admin
from bot.db.migrate import upgrade_to_head
from bot.db.session import make_engine, make_sessionmaker
from bot.domain.events import Source
from bot.domain.step_protocol import Outcome, OutputSink, StepContext
from bot.domain.steps import StepName
from bot.engine.engine import Actor, Click, Engine
from bot.settings import Settings
from bot.slack.app import build_slack_front
from bot.urls import with_database
from tests.engine.fake_steps import ScriptedStep, scripted_steps
from tests.slackwire.fake_web_api import FakeSlack, start_fake_slack

LINE = re.compile(r"\bline (\d+)\b")
CHANNEL_WRITES = ("chat.postMessage", "chat.update", "files.completeUploadExternal")


@dataclass
class Firehose(ScriptedStep):
    """Prints `count` numbered lines as fast as it can, remembering when each was printed."""

    count: int = 100_000
    printed_at: list[float] = field(default_factory=list)

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        for n in range(1, self.count + 1):
            emit(f"line {n}")
            self.printed_at.append(time.monotonic())
            if n % 1000 == 0:
                await asyncio.sleep(0)  # a real process's output arrives between awaits
        return Outcome(summary=f"{self.count} lines")


@dataclass
class Result:
    scenario: str
    printing: float  # first line to last line printed
    lags: list[float]  # per line, printed -> first shown; missing lines excluded
    never_shown: int
    in_tail: int  # lines first shown in a step message rather than the file
    file_lines: int
    file_complete: bool
    writes: int
    min_gap: float
    rate: float
    after_last_line: dict[str, float]


def first_shown(fake: FakeSlack, count: int) -> tuple[list[float | None], int]:
    """When each line (index n-1) was first in front of people, and how many via a message."""
    shown: list[float | None] = [None] * count
    via_message = 0
    for call in fake.calls:
        if call.method in ("chat.postMessage", "chat.update"):
            numbers = {int(n) for block in call.args.get("blocks") or []
                       for n in LINE.findall(json.dumps(block))}
            source = "message"
        elif call.method == "files.completeUploadExternal":
            files = call.args["files"]
            files = json.loads(files) if isinstance(files, str) else files
            numbers = {int(n) for f in files
                       for n in LINE.findall(fake.uploads[f["id"]].get("content", ""))}
            source = "file"
        else:
            continue
        for n in numbers:
            if 1 <= n <= count and shown[n - 1] is None:
                shown[n - 1] = call.at
                via_message += source == "message"
    return shown, via_message


async def one_run(lines: int, approve_from_message: bool) -> Result:
    name = f"bench_thread_{uuid.uuid4().hex[:6]}"
    await admin(f'CREATE DATABASE "{name}"')
    url = with_database(ADMIN, name)
    fake, fake_runner = await start_fake_slack()
    db = make_engine(url)
    try:
        await upgrade_to_head(url)
        steps = scripted_steps()
        hose = Firehose(StepName.BACKUP, count=lines)
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
        if approve_from_message:
            await fake.wait_for(lambda: any(m.text.startswith("Step 1/6") and "step_approve"
                                            in json.dumps(m.blocks)
                                            for m in fake.messages.values()))
        for user in ("U2", "U3"):
            await engine.approve(Click(Actor(user, user, Source.SLACK, True), run_id,
                                       execution.execution_id, execution.plan.fingerprint))

        def step_message(prefix: str) -> str | None:
            return next((m.text for m in fake.messages.values() if m.text.startswith(prefix)),
                        None)

        def settled() -> bool:  # as a person in the channel would see it
            shared = any(u.get("thread_ts") for u in fake.uploads.values())
            return (shared and (step_message("Step 1/6") or "").endswith("succeeded")
                    and step_message("Step 2/6") is not None)

        await fake.wait_for(settled, within=60)
        await asyncio.sleep(2.5)  # let the board's redraw go out too
        shown, via_message = first_shown(fake, lines)
        lags = [s - p for s, p in zip(shown, hose.printed_at, strict=True) if s is not None]
        upload = next(u for u in fake.uploads.values() if u.get("thread_ts"))
        file_lines = upload["content"].splitlines()
        writes = [c for c in fake.calls if c.method in CHANNEL_WRITES]
        times = [c.at for c in writes]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        last = hose.printed_at[-1]

        def first(method: str, predicate: str) -> float:
            return next(c.at for c in writes if c.method == method
                        and str(c.args.get("text", "")).startswith(predicate)) - last

        after = {
            "full log shared in the thread": next(
                c.at for c in writes if c.method == "files.completeUploadExternal") - last,
            "step message shows it succeeded": next(
                c.at for c in writes if c.args.get("text", "").endswith("succeeded")
                and c.args["text"].startswith("Step 1/6")) - last,
            "next step's message posted": first("chat.postMessage", "Step 2/6"),
        }
        result = Result(
            scenario="from the message" if approve_from_message else "before the thread",
            printing=hose.printed_at[-1] - hose.printed_at[0], lags=sorted(lags),
            never_shown=sum(s is None for s in shown), in_tail=via_message,
            file_lines=len(file_lines),
            file_complete=file_lines == [f"line {n}" for n in range(1, lines + 1)],
            writes=len(writes), min_gap=min(gaps),
            rate=(len(writes) - 1) / max(times[-1] - times[0], 1e-9), after_last_line=after)
        await front.close()
        await engine.shutdown()
        return result
    finally:
        await db.dispose()
        await fake_runner.cleanup()
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * (len(values) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    results = [await one_run(args.lines, True), await one_run(args.lines, False)]
    print(f"Thread write budget: a step printing {args.lines:,} lines as fast as it can\n")
    print("| approved | " + " | ".join(r.scenario for r in results) + " |")
    print("|---|" + "---|" * len(results))

    def row(label: str, cells: list[str]) -> None:
        print(f"| {label} | " + " | ".join(cells) + " |")

    row("printing took", [f"{r.printing:.2f} s" for r in results])
    row("channel writes (whole thread)", [str(r.writes) for r in results])
    row("smallest gap between two writes", [f"{r.min_gap:.2f} s" for r in results])
    row("writes per second, first to last", [f"{r.rate:.2f}/s" for r in results])
    for q, label in ((0.5, "p50"), (0.99, "p99"), (1.0, "max")):
        row(f"lag printed -> shown, {label} over all lines",
            [f"{percentile(r.lags, q):.2f} s" for r in results])
    row("lines never shown", [f"{r.never_shown:,}" for r in results])
    row("lines first shown in the live tail", [f"{r.in_tail:,}" for r in results])
    for key in results[0].after_last_line:
        row(f"last line printed -> {key}",
            [f"{r.after_last_line[key]:.2f} s" for r in results])
    row("attached log", [f"{r.file_lines:,} lines, "
                         f"{'complete' if r.file_complete else 'INCOMPLETE'}" for r in results])


if __name__ == "__main__":
    asyncio.run(main())
