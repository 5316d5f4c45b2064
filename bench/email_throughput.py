"""Email throughput: our `smtp` mailer step against a sequential smtplib loop, same run.

CLIENTS clients are seeded, downgraded and re-keyed on a sandbox target; then both contenders
send every client its email to a local aiosmtpd server: our email step (bounded concurrency,
ledger, keys read at send time) and the simplest loop a person would write with smtplib.

    python -m bench.email_throughput [--clients 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import smtplib
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from bench.rotation import ADMIN, admin
from bot.db.urls import libpq_url, with_database
from bot.rehearsal.postgres import free_port
from bot.settings import Settings
from sandbox.migrate import migrate
from sandbox.seed import seed
from steps.directory import Contact
from steps.email_clients import EmailClientsStep, Template
from steps.memory_ledgers import MemoryNotificationLedger, MemoryRotationLedger
from steps.protocol import StepContext
from steps.rotate_keys import RotateKeysStep


async def wait_listening(port: int) -> None:
    async with asyncio.timeout(15):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=10_000)
    args = parser.parse_args()
    name = f"bench_mail_{uuid.uuid4().hex[:6]}"
    await admin(f'CREATE DATABASE "{name}"')
    url = with_database(ADMIN, name)
    port = free_port()
    # A mail server is another process: share no interpreter (and no GIL) with the sender.
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
        "-l", f"127.0.0.1:{port}")
    await wait_listening(port)
    try:
        await migrate(url, "head")
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "clients.csv"
            await seed(url, args.clients, sessions_per_client=1, assistants_per_client=0,
                       directory_csv=csv)
            await migrate(url, "20260201_000006", down=True)
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None, target_database_url=url, mailer="smtp", smtp_host="127.0.0.1",
                smtp_port=port, client_directory=csv, email_concurrency=16)
            ctx = StepContext(str(uuid.uuid4()), settings, MemoryRotationLedger(),
                              MemoryNotificationLedger())
            await RotateKeysStep().run(ctx, lambda _l: None)

            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            started = time.perf_counter()
            await EmailClientsStep().run(ctx, lambda _l: None)
            ours = time.perf_counter() - started
            rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024

            conn = await asyncpg.connect(libpq_url(url))
            rows = await conn.fetch("SELECT owner_api_key FROM sessions")
            await conn.close()
            template = Template.load(settings)
            messages = [template.render(settings, Contact("Client", f"c{i}@example.test"),
                                        r["owner_api_key"], f"c{i}") for i, r in enumerate(rows)]
            started = time.perf_counter()
            await asyncio.to_thread(sequential, port, messages)
            baseline = time.perf_counter() - started
        print(f"Email throughput: {args.clients:,} clients to aiosmtpd in its own process\n")
        print(f"| sequential smtplib loop | {baseline:.1f} s | {args.clients / baseline:,.0f}/s |")
        print(f"| rollback-bot smtp step  | {ours:.1f} s | {args.clients / ours:,.0f}/s |")
        print(f"| speed-up                | {baseline / ours:.1f}x | |")
        print(f"| peak RSS growth (step)  | {rss_growth:.0f} MB | |")
    finally:
        server.terminate()
        await server.wait()
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sequential(port: int, messages: list[Any]) -> None:
    """The baseline: one connection per message, one after another, as a quick script does."""
    for message in messages:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.send_message(message)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
