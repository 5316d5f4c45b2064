"""`load_directory` on a 100,000-row CSV: the first load (parsed and every address validated,
in a thread) against the loads that follow while the file is unchanged (a `stat` each), and how
often the event loop got a turn during the cold load. Medians of five rounds, each on a fresh
copy of the file (a new path, so nothing is cached from the round before).

    python -m bench.directory_load [--clients 100000 --rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bot.settings import Settings
from steps.directory import load_directory

CACHED_LOADS = 100  # about what twenty steps' plans, clicks, checks and runs ask for


def write_csv(path: Path, clients: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "email", "api_key_sha256"])
        for n in range(clients):
            writer.writerow([f"Client {n}", f"ops{n}@client{n % 997}.example.com",
                             hashlib.sha256(f"client {n}".encode()).hexdigest()])


async def round_on(path: Path, clients: int) -> tuple[float, float, int]:
    """(cold load s, one cached load s, loop turns during the cold load)."""
    settings = Settings(_env_file=None, client_directory=path)  # type: ignore[call-arg]
    started = time.perf_counter()
    load = asyncio.create_task(load_directory(settings))
    turns = 0
    while not load.done():
        await asyncio.sleep(0.01)
        turns += 1
    directory = await load
    cold = time.perf_counter() - started
    if len(directory.contacts) != clients:
        raise SystemExit(f"{len(directory.contacts)} contacts, expected {clients}")
    started = time.perf_counter()
    for _ in range(CACHED_LOADS):
        if await load_directory(settings) is not directory:
            raise SystemExit("an unchanged file was parsed again")
    return cold, (time.perf_counter() - started) / CACHED_LOADS, turns


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100_000, help="rows (default 100000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    args = parser.parse_args()
    colds: list[float] = []
    cached: list[float] = []
    turns: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "clients.csv"
        write_csv(source, args.clients)
        for n in range(args.rounds):
            copy = Path(tmp) / f"clients-{n}.csv"
            shutil.copyfile(source, copy)
            past = time.time_ns() - 3600 * 10**9  # written before the incident (see RACY_NS)
            os.utime(copy, ns=(past, past))
            cold, warm, ticks = await round_on(copy, args.clients)
            colds.append(cold)
            cached.append(warm)
            turns.append(ticks)
    c, w = statistics.median(colds), statistics.median(cached)
    print(f"Client directory load: {args.clients:,} rows, median of {args.rounds}\n")
    print("| | time | loop turns meanwhile (10 ms ticker) |")
    print("|---|---|---|")
    print(f"| cold (parse + validate, in a thread) | {c:.2f} s | {statistics.median(turns):.0f} |")
    print(f"| cached (file unchanged) | {w * 1e6:.0f} µs | — |")
    print(f"\ncold / cached: {c / w:,.0f}×")


if __name__ == "__main__":
    asyncio.run(main())
