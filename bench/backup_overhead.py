"""The backup step's overhead over `pg_dump -F c` run by hand, on the 1.2 M-row target.

Both write the same custom-format dump; the step also verifies it (`pg_restore --list`) and
hashes it (sha256) side by side, which is reported apart. Five rounds each, alternating; medians.

    python -m bench.backup_overhead [--sessions 1000000 --assistants 200000 --clients 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench.rotation import ADMIN, admin, build_template
from bot.domain.memory_ledgers import MemoryNotificationLedger, MemoryRotationLedger
from bot.domain.step_protocol import StepContext
from bot.settings import Settings
from bot.urls import libpq_url, with_database
from steps.backup import BackupStep, file_sha256


def by_hand(url: str, folder: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["pg_dump", "-F", "c", "-f", str(folder / "by-hand.dump"), "-d",
                    libpq_url(url)], check=True)
    return time.perf_counter() - started


async def ours(url: str, folder: Path) -> tuple[float, float]:
    """(whole step, of which verification and hashing)."""
    settings = Settings(_env_file=None, target_database_url=url,  # type: ignore[call-arg]
                        backup_dir=folder / f"step-{uuid.uuid4().hex[:6]}")
    ctx = StepContext(str(uuid.uuid4()), settings, MemoryRotationLedger(),
                      MemoryNotificationLedger())
    started = time.perf_counter()
    outcome = await BackupStep().run(ctx, lambda _line: None)
    total = time.perf_counter() - started
    return total, await asyncio.to_thread(verify_alone, Path(outcome.facts["path"]))


def verify_alone(dump: Path) -> float:
    """Verification + hashing, measured alone on the same file, side by side as the step
    runs them."""
    started = time.perf_counter()
    listing = subprocess.Popen(["pg_restore", "--list", str(dump)], stdout=subprocess.DEVNULL)
    file_sha256(dump)  # the step's own hashing (OpenSSL's sha256 through hashlib)
    if listing.wait() != 0:
        raise SystemExit("pg_restore --list failed")
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--assistants", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    name = f"bench_dump_{uuid.uuid4().hex[:6]}"
    try:
        await build_template(name, args.sessions, args.assistants, args.clients)
        url = with_database(ADMIN, name)
        hand: list[float] = []
        step: list[float] = []
        checks: list[float] = []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                hand.append(await asyncio.to_thread(by_hand, url, Path(tmp)))
                total, check = await ours(url, Path(tmp))
                step.append(total)
                checks.append(check)
        h, s, c = statistics.median(hand), statistics.median(step), statistics.median(checks)
        print(f"Backup overhead: {args.sessions + args.assistants:,} rows, median of "
              f"{args.rounds}\n")
        print(f"| pg_dump -F c by hand | {h:.2f} s |")
        print(f"| backup step (dump + verify + sha256) | {s:.2f} s ({(s / h - 1) * 100:+.0f} %) |")
        print(f"| of which verify + sha256 | {c:.2f} s |")
        print(f"| the step's dump alone (step - verify) | {s - c:.2f} s "
              f"({((s - c) / h - 1) * 100:+.1f} %) |")
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
