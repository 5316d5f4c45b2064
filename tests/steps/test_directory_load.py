"""The client directory at incident size: parsed off the event loop, and once per file state."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import os
import time
from pathlib import Path

import pytest

from bot.domain.step_protocol import StepError
from bot.settings import KeyModel
from steps.directory import load_directory, parse_address
from tests.steps.step_context import settings_for

ROWS = 100_000


def old_hash(n: int) -> str:
    return hashlib.sha256(f"client {n}".encode()).hexdigest()


def settled(path: Path) -> Path:
    """As a file written before the incident: its mtime a minute ago (a file modified in the
    last 2 s is read again at each load, its stamp not yet to be trusted)."""
    past = time.time_ns() - 60 * 10**9
    os.utime(path, ns=(past, past))
    return path


def write_directory(path: Path, rows: int, start: int = 0) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "email", "api_key_sha256"])
        for n in range(start, start + rows):
            writer.writerow([f"Client {n}", f"ops{n}@client{n % 97}.example.test", old_hash(n)])
    return path


async def test_the_event_loop_keeps_running_while_100k_rows_are_parsed(tmp_path: Path) -> None:
    """Done on the loop (as before), the load let no other coroutine run until it finished:
    every click, reply and heartbeat of the bot waited seconds. Now another coroutine keeps
    ticking while the rows are checked, and the load still gives every row."""
    settings = settings_for(client_directory=write_directory(tmp_path / "big.csv", ROWS))
    load = asyncio.create_task(load_directory(settings))
    ticks = 0
    ticks_while_loading = 0
    while not load.done():
        await asyncio.sleep(0.005)  # a heartbeat's or a reply's turn on the loop
        ticks += 1
        if not load.done():
            ticks_while_loading = ticks
    directory = await load
    assert len(directory.contacts) == ROWS and directory.problems == []
    assert ticks_while_loading >= 20, ticks_while_loading  # 0 when parsed on the loop


async def test_an_unchanged_file_is_not_read_again_and_a_changed_one_is(tmp_path: Path) -> None:
    path = settled(write_directory(tmp_path / "clients.csv", 3))
    settings = settings_for(client_directory=path)
    first = await load_directory(settings)
    assert await load_directory(settings) is first, "unchanged: the same parse, not a new one"

    with path.open("a", encoding="utf-8") as handle:  # an edit: the new row is seen
        handle.write(f"Late,late@client.example.test,{old_hash(99)}\n")
    assert await load_directory(settings) is not first
    settled(path)
    edited = await load_directory(settings)
    assert edited is not first and edited.contacts[old_hash(99)].email == \
        "late@client.example.test"
    assert await load_directory(settings) is edited

    # Replaced by a file of the very same size whose mtime is set back: still read afresh.
    stat = path.stat()
    swapped = tmp_path / "swap.csv"
    swapped.write_text(path.read_text(encoding="utf-8").replace("late@", "lat2@"),
                       encoding="utf-8")
    os.utime(swapped, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(swapped, path)
    assert (await load_directory(settings)).contacts[old_hash(99)].email == \
        "lat2@client.example.test"

    # Just written (so the stamp may not yet show a second write in the same clock tick):
    # read at every load until it has settled.
    path.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    fresh = await load_directory(settings)
    assert await load_directory(settings) is not fresh

    # KEY_MODEL changes what a parse keeps, so each model has its own.
    settled(path)
    service = await load_directory(settings_for(client_directory=path,
                                                key_model=KeyModel.SERVICE))
    assert service is not await load_directory(settings)
    assert service is await load_directory(settings_for(client_directory=path,
                                                        key_model=KeyModel.SERVICE))


async def test_a_failed_read_is_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "clients.csv"
    path.write_text(f"who,mail,hash\nA,a@a.test,{old_hash(1)}\n", encoding="utf-8")
    settings = settings_for(client_directory=path)
    with pytest.raises(StepError, match="must have the header"):
        await load_directory(settings)
    write_directory(path, 2)
    assert len((await load_directory(settings)).contacts) == 2
    path.unlink()
    with pytest.raises(StepError, match="does not exist"):
        await load_directory(settings)


def test_addresses_are_checked_without_asking_dns() -> None:
    """Deliverability is never asked (it would look up MX records for each of 100,000 rows,
    and refuse this domain, which does not exist)."""
    assert parse_address("ops@no-such-domain-rollback-bot.com") == \
        "ops@no-such-domain-rollback-bot.com"
