"""Email throughput: our `smtp` mailer step against sequential smtplib loops, same run, same sink.

CLIENTS clients are seeded, downgraded and re-keyed on a sandbox target. For each sink
configuration (how many aiosmtpd processes share the port; how long each SMTP reply waits, to
emulate a relay across a network) the contenders send every client its email in turn:

- our email step as the bot runs it: SQL notification ledger in a bot database, keys read from
  the target at send time, `EMAIL_CONCURRENCY` senders (the setting's default unless
  `--concurrency`), after its canary has tried a sample of the keys on the sandbox api (a
  local process at Phase 2, not this one: its CPU is not the sender's);
- the loop a person would write: smtplib, one connection per message, one after another (the
  issue's baseline), and the same loop keeping one connection (a stronger baseline).

A sequential loop against a delayed sink would take many minutes for 10,000 messages, so each
loop runs for at most `--baseline-seconds` and its rate is what it sent in that time (a
sequential loop's rate does not change with the count). CPU time of the sender and the sink is
measured per contender: on loopback without delay both are CPU-bound, and the best any sender
can do on this machine is (sender + sink CPU per message) / cores.

    python -m bench.email_throughput [--clients 10000] [--sink-processes 2]
                                     [--reply-delay-ms 0,5,20] [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import smtplib
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.rotation import ADMIN, admin
from bench.smtp_sink import Sink
from bot.db import repo_runs
from bot.db.ledgers import SqlNotificationLedger
from bot.db.migrate import upgrade_to_head
from bot.db.session import make_engine, make_sessionmaker
from bot.domain.memory_ledgers import MemoryNotificationLedger, MemoryRotationLedger
from bot.domain.states import RunStatus
from bot.domain.step_protocol import StepContext
from bot.rehearsal.api import start_local_api, wait_healthy
from bot.rehearsal.postgres import free_port
from bot.settings import Settings
from bot.urls import libpq_url, with_database
from sandbox.migrate import migrate
from sandbox.seed import seed
from steps.directory import Contact
from steps.email_clients import EmailClientsStep, Template
from steps.rotate_keys import RotateKeysStep

MEMORY_PROBE = 2_000  # peak memory after this many clients, then after all of them
EHLO_NAME = "bench.local"


@dataclass(frozen=True)
class Result:
    sent: int
    wall: float
    sender_cpu: float  # this process (the sending thread for the loops)
    sink_cpu: float

    @property
    def rate(self) -> float:
        return self.sent / self.wall

    def cpu_ms(self) -> str:
        return (f"{1000 * self.sender_cpu / self.sent:.2f} + "
                f"{1000 * self.sink_cpu / self.sent:.2f}")


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(sink: Sink, work: object) -> tuple[float, float, float]:
    cpu, sink_cpu, started = cpu_now(), sink.cpu_seconds(), time.perf_counter()
    await work  # type: ignore[misc]
    return time.perf_counter() - started, cpu_now() - cpu, sink.cpu_seconds() - sink_cpu


@dataclass
class Bench:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    mapping: Mapping[str, str]  # old hash -> new hash, from step 4
    messages: list[tuple[Contact, str, str]]  # for the loops: contact, key, tag

    async def ours(self, sink: Sink, clients: int, concurrency: int | None) -> Result:
        """Our step for the first `clients` clients, in a fresh run (its own ledger rows)."""
        async with self.sessions() as session, session.begin():
            run = await repo_runs.create_run(
                session, initiator_id="U_BENCH", initiator_name="bench", reason="bench",
                source="terminal", channel_id=None)
            run_id = str(run.id)  # type: ignore[union-attr]
        rotations = MemoryRotationLedger()
        await rotations.record(run_id, dict(list(self.mapping.items())[:clients]))
        overrides = {"smtp_port": sink.port}
        if concurrency:
            overrides["email_concurrency"] = concurrency
        settings = self.settings.model_copy(update=overrides)
        ctx = StepContext(run_id, settings, rotations, SqlNotificationLedger(self.sessions))
        wall, cpu, sink_cpu = await measure(sink, EmailClientsStep().run(ctx, lambda _l: None))
        async with self.sessions() as session, session.begin():
            await repo_runs.finish_run(session, run_id, RunStatus.COMPLETED, None)
        return Result(clients, wall, cpu, sink_cpu)

    async def loop(self, sink: Sink, reuse: bool, seconds: float) -> Result:
        sent: list[int] = []
        wall, cpu, sink_cpu = await measure(sink, asyncio.to_thread(
            sequential, sink.port, self.settings, self.messages, reuse, seconds, sent))
        return Result(sent[0], wall, cpu, sink_cpu)


def sequential(port: int, settings: Settings, messages: Iterable[tuple[Contact, str, str]],
               reuse: bool, seconds: float, sent: list[int]) -> None:
    """The baseline: render and send one message after another, until done or out of time."""
    template = Template.load(settings)
    deadline = time.perf_counter() + seconds
    count = 0
    # A fixed EHLO name: otherwise smtplib resolves the machine's FQDN on every connection.
    smtp = smtplib.SMTP("127.0.0.1", port, local_hostname=EHLO_NAME) if reuse else None
    for contact, key, tag in messages:
        message = template.render(settings, contact, key, tag)
        if smtp is not None:
            smtp.send_message(message)
        else:
            with smtplib.SMTP("127.0.0.1", port, local_hostname=EHLO_NAME) as once:
                once.send_message(message)
        count += 1
        if time.perf_counter() > deadline:
            break
    if smtp is not None:
        smtp.quit()
    sent.append(count)


async def start_api(target: str, tmp: Path) -> tuple[str, Callable[[], None]]:
    """The sandbox api at Phase 2 on the target, for step 5's canary: base URL and stop."""
    port = free_port()
    api = await start_local_api(tmp, {"DATABASE_URL": target, "PORT": str(port),
                                      "SANDBOX_PHASE": "2"}, tmp / "api.log")
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base_url, 30)
    except BaseException:
        api.stop()
        raise
    return base_url, api.stop


async def prepare(args: argparse.Namespace, target: str, bot: str, tmp: Path,
                  api_base_url: str) -> Bench:
    csv = tmp / "clients.csv"
    await migrate(target, "head")
    await seed(target, args.clients, sessions_per_client=1, assistants_per_client=0,
               directory_csv=csv)
    await migrate(target, "20260201_000006", down=True)
    await upgrade_to_head(bot)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, target_database_url=target, mailer="smtp", smtp_host="127.0.0.1",
        client_directory=csv, api_base_url=api_base_url)
    rotations = MemoryRotationLedger()
    run_id = str(uuid.uuid4())
    await RotateKeysStep().run(
        StepContext(run_id, settings, rotations, MemoryNotificationLedger()), lambda _l: None)
    mapping = await rotations.mapping(run_id)
    conn = await asyncpg.connect(libpq_url(target))
    keys = {r["h"]: r["k"] for r in await conn.fetch(
        "SELECT owner_api_key_hash AS h, owner_api_key AS k FROM sessions")}
    await conn.close()
    messages = [(Contact("Client", f"c{i}@example.test"), keys[new], old[:12])
                for i, (old, new) in enumerate(mapping.items())]
    engine = make_engine(bot)
    return Bench(settings, make_sessionmaker(engine), mapping, messages)


def numbers(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--sink-processes", default="2", help="comma-separated, e.g. 1,2,4")
    parser.add_argument("--reply-delay-ms", default="0,5,20", help="comma-separated, e.g. 0,5")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="EMAIL_CONCURRENCY for our step (default: the setting's default)")
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:6]
    target_db, bot_db = f"bench_mail_{tag}", f"bench_mailbot_{tag}"
    for db in (target_db, bot_db):
        await admin(f'CREATE DATABASE "{db}"')
    try:
        with tempfile.TemporaryDirectory() as tmp:
            target = with_database(ADMIN, target_db)
            api_base_url, stop_api = await start_api(target, Path(tmp))
            try:
                bench = await prepare(args, target, with_database(ADMIN, bot_db), Path(tmp),
                                      api_base_url)
                await report(bench, args)
            finally:
                stop_api()
    finally:
        for db in (target_db, bot_db):
            await admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


async def report(bench: Bench, args: argparse.Namespace) -> None:
    concurrency = args.concurrency or bench.settings.email_concurrency
    cores = os.cpu_count() or 1
    print(f"Email throughput: {args.clients:,} clients; our step with {concurrency} senders and "
          f"the SQL ledger; sequential loops timed for at most {args.baseline_seconds:.0f} s; "
          f"{cores} cores\n")
    print("| sink | contender | sent | time | rate | CPU ms/msg (sender + sink) |")
    print("|---|---|---|---|---|---|")
    summary: list[str] = []
    memory: list[str] = []
    for delay in numbers(args.reply_delay_ms):
        for processes in numbers(args.sink_processes):
            async with Sink(free_port(), int(processes), delay) as sink:
                label = f"{int(processes)} proc, {delay:g} ms"
                if not memory:  # first sink: our step's peak memory growth, small then full
                    await bench.ours(sink, 200, args.concurrency)  # warm-up: imports, pools
                    before = peak_rss_mb()
                    small = min(MEMORY_PROBE, args.clients)
                    await bench.ours(sink, small, args.concurrency)
                    memory.append(f"{small:,} clients: +{peak_rss_mb() - before:.1f} MB")
                ours = await bench.ours(sink, args.clients, args.concurrency)
                if len(memory) == 1:
                    memory.append(f"{args.clients:,} clients: +{peak_rss_mb() - before:.1f} MB")
                per_message = await bench.loop(sink, False, args.baseline_seconds)
                reused = await bench.loop(sink, True, args.baseline_seconds)
                for name, r in (("smtplib, connection per message", per_message),
                                ("smtplib, one connection", reused),
                                ("rollback-bot smtp step", ours)):
                    print(f"| {label} | {name} | {r.sent:,} | {r.wall:.1f} s | "
                          f"{r.rate:,.0f}/s | {r.cpu_ms()} |")
                bound = per_message.wall / per_message.sent / (
                    max(ours.sender_cpu, (ours.sender_cpu + ours.sink_cpu) / cores) / ours.sent)
                summary.append(f"| {label} | {ours.rate / per_message.rate:.1f}x | "
                               f"{ours.rate / reused.rate:.1f}x | {bound:.1f}x |")
    print("\n| sink | speed-up vs per-message loop | vs one-connection loop "
          "| CPU ceiling vs per-message loop |")
    print("|---|---|---|---|")
    print("\n".join(summary))
    print(f"\nPeak RSS growth of the bench process during our step (after a warm-up of 200): "
          f"{'; '.join(memory)}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
