"""Whole-rollback machine time: the six real steps through the real engine, approvals instant.

What an on-call engineer waits for once two people are ready to click: the rehearsal's sandbox
(`bot/rehearsal`: a bot database, a target at the Phase 3 head, the code checkout, the api in
Docker or as a local process restarted by a script) filled to SESSIONS sessions and ASSISTANTS
assistants over CLIENTS owners with their client directory CSV; the engine opened as every front
opens it (`open_engine`, `default_steps()`), a run started, each step approved by two distinct
engineers the moment it asks; emails to the two-process SMTP sink (`bench.smtp_sink`) answering
each command after a relay delay. Reported per step: the step's own time (from the engine's log:
started -> finished) and the run's wall time from `start_run` to completed, the difference being
the engine's own work (plans, approvals, hand-offs).

The baseline, in the same run, on a second target filled the same way: the runbook's commands as
a person would type them with no pause (`bench.whole_rollback_runbook`).

    python -m bench.whole_rollback [--sessions 1000000 --assistants 200000 --clients 100000]
                                   [--reply-delay-ms 5] [--no-docker] [--no-baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import resource
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.smtp_sink import Sink
from bench.whole_rollback_runbook import RunbookTimes, run_runbook
from bench.whole_rollback_target import filled_copy, stand_up_filled
from bot.db import repo_events
from bot.domain.events import Source
from bot.domain.states import DONE_STEP_STATUSES, RETRYABLE_STEP_STATUSES, RunStatus, StepStatus
from bot.domain.steps import StepName
from bot.domain.views import RunView
from bot.engine.engine import Actor, Click, Engine
from bot.rehearsal.postgres import free_port
from bot.settings import MailerKind, RestartStrategy, Settings
from bot.startup import open_engine

LABELS = {StepName.BACKUP: "backup", StepName.DOWNGRADE: "downgrade",
          StepName.RESTART: "restart", StepName.ROTATE_KEYS: "keys",
          StepName.EMAIL_CLIENTS: "email", StepName.VERIFY: "verify"}
INITIATOR = Actor("bench:carol", "carol", Source.TERMINAL, True)
APPROVERS = (Actor("bench:alice", "alice", Source.TERMINAL, True),
             Actor("bench:bob", "bob", Source.TERMINAL, True))
MIN_READ_GAP = 0.1  # read the run at most this often: the email step changes it per batch


class RollbackFailed(Exception):
    """A step failed or the run was aborted: the bench has no figure to give."""


@dataclass
class OurRun:
    run_id: str = ""
    wall: float = 0.0
    steps: dict[StepName, float] = field(default_factory=dict)  # started -> finished (log)
    # the step before it ended (or the run started) -> started: its plan, made once to show and
    # again at each approval, the approvals, the hand-off (from the log)
    lead_in: dict[StepName, float] = field(default_factory=dict)
    waited: dict[StepName, float] = field(default_factory=dict)  # asked -> approved (ours)
    summaries: dict[StepName, str] = field(default_factory=dict)
    cpu: float = 0.0  # this process: the engine, the steps, and this driver
    children_cpu: float = 0.0  # pg_dump, pg_restore, alembic, git, the restart script
    peak_rss_mb: float = 0.0


def cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


async def approve(engine: Engine, view: RunView, execution_id: str, fingerprint: str) -> None:
    for actor in APPROVERS:
        answer = await engine.approve(Click(actor, view.run_id, execution_id, fingerprint))
        if not answer.accepted:
            raise RollbackFailed(f"approval by {actor.user_name} refused: {answer.message}")


async def drive(engine: Engine, result: OurRun) -> OurRun:
    """Start a run and approve each step as soon as it asks, until the run completes."""
    changed = asyncio.Event()
    engine.subscribe(lambda _run_id: changed.set())
    cpu0, children0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    answer = await engine.start_run(INITIATOR, "bench: whole-rollback machine time", None)
    if not answer.accepted or answer.run_id is None:
        raise RollbackFailed(f"the run did not start: {answer.message}")
    run_id = result.run_id = answer.run_id
    approved: set[str] = set()
    while True:
        changed.clear()
        read_at = time.perf_counter()
        view = await engine.run_view(run_id)
        for step in view.steps:
            if step.status in RETRYABLE_STEP_STATUSES or step.status is StepStatus.ABORTED:
                raise RollbackFailed(f"{LABELS[step.step]} {step.status}: {step.summary}\n"
                                     + "\n".join(step.error_tail or step.output_tail))
            if (step.status is StepStatus.AWAITING_APPROVAL and step.plan is not None
                    and step.execution_id is not None and step.execution_id not in approved):
                asked = time.perf_counter()
                await approve(engine, view, step.execution_id, step.plan.fingerprint)
                approved.add(step.execution_id)
                result.waited[step.step] = time.perf_counter() - asked
                changed.set()
        if view.status is RunStatus.COMPLETED:
            result.wall = time.perf_counter() - started
            break
        if view.status is RunStatus.ABORTED:
            raise RollbackFailed(f"the run was aborted: {view.abort_reason}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await changed.wait()
        await asyncio.sleep(max(0.0, MIN_READ_GAP - (time.perf_counter() - read_at)))
    result.cpu = cpu(resource.RUSAGE_SELF) - cpu0
    result.children_cpu = cpu(resource.RUSAGE_CHILDREN) - children0
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    await engine.wait_idle()
    view = await engine.run_view(run_id)
    previous = view.created_at  # the run's start, then each step's end, in the log's clock
    for step in view.steps:
        assert step.status in DONE_STEP_STATUSES and step.started_at and step.finished_at
        result.lead_in[step.step] = (step.started_at - previous).total_seconds()
        result.steps[step.step] = (step.finished_at - step.started_at).total_seconds()
        result.summaries[step.step] = step.summary or ""
        previous = step.finished_at
    return result


async def print_log(engine: Engine, run_id: str) -> None:
    """The run's incident log with times from its first entry: where the time went."""
    async with engine.sessions() as session:
        events = await repo_events.all_events(session, run_id)
    first = events[0].at if events else None
    for event in events:
        assert first is not None
        data = json.dumps(event.data, default=str)
        print(f"{(event.at - first).total_seconds():8.2f} s  {event.kind:<18} "
              f"{event.step or '':<14} {data[:140]}", file=sys.stderr)


async def our_rollback(settings: Settings, show_log: bool) -> OurRun:
    result = OurRun()
    async with open_engine(settings) as engine:
        try:
            return await drive(engine, result)
        finally:
            if show_log and result.run_id:
                await print_log(engine, result.run_id)


def report(args: argparse.Namespace, ours: OurRun, runbook: RunbookTimes | None,
           settings: Settings, fill_seconds: float) -> None:
    api = ("in a Docker container (restart: Docker)"
           if settings.restart_strategy is RestartStrategy.DOCKER
           else "as a local process (RESTART_STRATEGY=command)")
    print(f"Whole rollback: {args.sessions:,} sessions, {args.assistants:,} assistants, "
          f"{args.clients:,} clients (filled in {fill_seconds:.1f} s); api {api}; emails to "
          f"{args.sink_processes} sink processes, {args.reply_delay_ms:g} ms per SMTP reply\n")
    print("| step | rollback-bot: plan + 2 approvals | rollback-bot: the step | runbook by hand "
          "| ratio | rollback-bot says |")
    print("|---|---|---|---|---|---|")
    for step, seconds in ours.steps.items():
        label, lead_in = LABELS[step], ours.lead_in[step]
        hand = runbook.seconds.get(label) if runbook else None
        print(f"| {label} | {lead_in:.1f} s | {seconds:.1f} s | "
              + (f"{hand:.1f} s | {(lead_in + seconds) / hand:.2f}" if hand else "- | -")
              + f" | {ours.summaries[step][:90]} |")
    rest = ours.wall - sum(ours.steps.values()) - sum(ours.lead_in.values())
    hand_total = f"**{runbook.total:.1f} s** | **{ours.wall / runbook.total:.2f}**" \
        if runbook else "- | -"
    print(f"| **total** (wall, start to completed) | {sum(ours.lead_in.values()):.1f} s | "
          f"{sum(ours.steps.values()):.1f} s | {hand_total} | **{ours.wall:.1f} s** (of which "
          f"{rest:.1f} s: starting the run, and seeing it completed) |")
    print(f"\nrollback-bot process: {ours.cpu:.1f} s CPU, peak RSS {ours.peak_rss_mb:.0f} MB; "
          f"its child processes {ours.children_cpu:.1f} s CPU")
    if runbook:
        for label, note in runbook.notes.items():
            print(f"runbook {label}: {note}")


async def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.whole_rollback",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1_000_000,
                        help="sessions on the target (default 1,000,000)")
    parser.add_argument("--assistants", type=int, default=200_000,
                        help="assistants on the target (default 200,000)")
    parser.add_argument("--clients", type=int, default=100_000,
                        help="distinct owners, all in the client directory (default 100,000); "
                        "e.g. --sessions 100000 --assistants 20000 --clients 10000 for a "
                        "tenth")
    parser.add_argument("--reply-delay-ms", type=float, default=5.0,
                        help="the sink's delay before each SMTP reply (a relay's round trip)")
    parser.add_argument("--sink-processes", type=int, default=2,
                        help="aiosmtpd processes sharing the sink's port (default 2)")
    parser.add_argument("--email-window", type=float, default=15.0,
                        help="seconds each baseline smtplib loop is timed for")
    parser.add_argument("--no-docker", action="store_true",
                        help="the api as a local process (RESTART_STRATEGY=command)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the runbook's commands (our run only)")
    parser.add_argument("--plan-timeout", type=float, default=60.0,
                        help="PLAN_TIMEOUT_SECONDS for our run (default 60; the setting's own "
                        "default, 5 s, is too short for step 5's plan at 100,000 clients)")
    parser.add_argument("--log", action="store_true",
                        help="print the run's incident log, with times, to stderr")
    parser.add_argument("--keep", action="store_true",
                        help="keep the folder (backup, logs) and print where it is")
    args = parser.parse_args()
    if args.sessions < args.clients:
        parser.error("--sessions must be at least --clients (every client owns sessions)")
    folder = Path(tempfile.mkdtemp(prefix="rb-whole-rollback-"))
    (folder / "logs").mkdir()
    logging.basicConfig(filename=folder / "logs" / "bot.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base = Settings(_env_file=None)  # type: ignore[call-arg]
    sandbox, fill_seconds = await stand_up_filled(
        base, folder, args.sessions, args.assistants, args.clients,
        False if args.no_docker else None, sys.stderr)
    try:
        async with Sink(free_port(), args.sink_processes, args.reply_delay_ms) as sink:
            settings = sandbox.settings.model_copy(update={
                "mailer": MailerKind.SMTP, "smtp_host": "127.0.0.1", "smtp_port": sink.port,
                "step_timeout_seconds": 3600.0, "plan_timeout_seconds": args.plan_timeout})
            runbook = None
            if not args.no_baseline:
                name = f"{sandbox.databases[-1]}_runbook_{uuid.uuid4().hex[:4]}"
                url = await filled_copy(sandbox, name, args.sessions, args.assistants,
                                        args.clients)
                print("runbook baseline: running", file=sys.stderr, flush=True)
                runbook = await run_runbook(settings, url, folder / "runbook", args.clients,
                                            args.email_window)
                await sandbox.server.drop_database(name)
                sandbox.databases.remove(name)
            print("rollback-bot: running", file=sys.stderr, flush=True)
            try:
                ours = await our_rollback(settings, args.log)
            except RollbackFailed as exc:
                print(f"rollback-bot did not complete: {exc}\nlogs: {folder / 'logs'}",
                      file=sys.stderr)
                args.keep = True
                return 1
        report(args, ours, runbook, settings, fill_seconds)
        return 0
    finally:
        await sandbox.collect_logs()
        await sandbox.tear_down()
        if args.keep:
            print(f"\nfolder kept: {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
