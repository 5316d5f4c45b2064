"""The baseline for the whole-rollback bench: the runbook's own commands, typed by a person who
never pauses, on a second copy of the same target in the same run.

1. `pg_dump -F c -f backup_before_rollback.dump`
2. `alembic downgrade 20260201_000006` (the sandbox's chain, from its folder, as our step does)
3. `git checkout phase-2` in a checkout, `docker compose restart api` (here `docker restart` of
   the sandbox's api container, or its restart script without Docker), then `curl /health` until
   it answers 200
4. the runbook's two UPDATEs (a key per ROW: wrong, but what it says)
5. pull one key per client and email each with a sequential smtplib loop, to the same sink. A
   loop against a relay sends tens of emails a second, so 100,000 would take most of an hour:
   each loop runs for a fixed window and its rate gives its time for every client (a sequential
   loop's rate does not change with the count). Both loops of `bench.email_throughput` are
   timed (a connection per message; one connection); the faster counts.
6. `curl -H "X-API-Key: …" /api/v1/sessions` for as many keys as our step samples, plus a random
   one, and `docker compose logs api | grep ownership_check`

Restart and verify act on the sandbox's api (the one our run restarts), so they run before ours.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench.email_throughput import sequential
from bench.rotation import RUNBOOK_SQL
from bot.rehearsal.api import REPO_ROOT, wait_healthy
from bot.settings import RestartStrategy, Settings
from bot.urls import libpq_url, password_of
from sandbox.code_dir import make_code_dir
from sandbox.migrate import asyncpg_url
from steps.directory import Contact, load_directory

PHASE2_REVISION = "20260201_000006"
KEYS_SQL = """SELECT DISTINCT ON (owner_api_key_hash) owner_api_key_hash AS h, owner_api_key AS k
                FROM sessions WHERE owner_api_key IS NOT NULL"""


@dataclass
class RunbookTimes:
    seconds: dict[str, float] = field(default_factory=dict)  # step -> seconds
    notes: dict[str, str] = field(default_factory=dict)  # step -> how it was measured

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def shell(command: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    subprocess.run(command, shell=True, check=True, cwd=cwd, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def timed(work: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await work()
    return time.perf_counter() - started


def api_container(settings: Settings) -> str:
    return settings.api_container_name or f"{settings.api_compose_project}-api-1"


async def restart_api(settings: Settings, code: Path) -> None:
    await asyncio.to_thread(shell, "git checkout --quiet phase-2", code)
    if settings.restart_strategy is RestartStrategy.DOCKER:
        await asyncio.to_thread(shell, f"docker restart {shlex.quote(api_container(settings))}")
    else:
        await asyncio.to_thread(shell, settings.restart_command)
    await wait_healthy(settings.api_base_url)


def curl_and_grep(settings: Settings, keys: list[str], api_log: Path) -> None:
    url = settings.api_base_url.rstrip("/") + "/api/v1/sessions"
    for key in [*keys, str(uuid.uuid4())]:
        shell(f"curl -s -o /dev/null -H {shlex.quote('X-API-Key: ' + key)} {shlex.quote(url)}")
    if settings.restart_strategy is RestartStrategy.DOCKER:
        logs = f"docker logs {shlex.quote(api_container(settings))} 2>&1"
    else:
        logs = f"cat {shlex.quote(str(api_log))}"
    shell(f"{logs} | grep -c ownership_check || true")


async def emails_by_loop(settings: Settings, url: str, clients: int,
                         window: float) -> tuple[float, str]:
    """(seconds for every client at the faster loop's rate, how it was measured)."""
    started = time.perf_counter()
    directory = await load_directory(settings)
    conn = await asyncpg.connect(libpq_url(url), password=password_of(url))
    try:
        keys = {r["h"]: r["k"] for r in await conn.fetch(KEYS_SQL)}
    finally:
        await conn.close()
    messages = [(directory.contacts[h], k, h[:12]) for h, k in keys.items()
                if h in directory.contacts] or [(Contact("c", "c@example.test"), "k", "t")]
    gather = time.perf_counter() - started
    rates: dict[str, float] = {}
    for reuse, label in ((False, "a connection per message"), (True, "one connection")):
        sent: list[int] = []
        began = time.perf_counter()
        await asyncio.to_thread(sequential, settings.smtp_port, settings, messages, reuse,
                                window, sent)
        rates[label] = sent[0] / (time.perf_counter() - began)
    best = max(rates, key=lambda label: rates[label])
    note = (f"keys pulled in {gather:.1f} s; smtplib loops timed {window:g} s each: "
            + ", ".join(f"{label} {rate:.0f}/s" for label, rate in rates.items())
            + f"; {clients:,} clients at {rates[best]:.0f}/s ({best})")
    return gather + clients / rates[best], note


async def run_runbook(settings: Settings, url: str, folder: Path, clients: int,
                      email_window: float) -> RunbookTimes:
    """The six steps by hand on the target at `url`; `settings` is our run's (api, sink)."""
    times = RunbookTimes()
    folder.mkdir(parents=True, exist_ok=True)
    dump = folder / "backup_before_rollback.dump"
    times.seconds["backup"] = await timed(lambda: asyncio.to_thread(
        shell, f"pg_dump -F c -f {shlex.quote(str(dump))} -d {shlex.quote(libpq_url(url))}"))
    dump.unlink()
    alembic = shlex.quote(str(Path(sys.prefix) / "bin" / "alembic"))  # as the sandbox runs it
    env = {**os.environ, "DATABASE_URL": asyncpg_url(url)}
    times.seconds["downgrade"] = await timed(lambda: asyncio.to_thread(
        shell, f"{alembic} downgrade {PHASE2_REVISION}", REPO_ROOT / "sandbox", env))
    code = make_code_dir(folder / "code")
    times.seconds["restart"] = await timed(lambda: restart_api(settings, code))
    times.notes["restart"] = ("the sandbox api: " + ("`docker restart`"
                              if settings.restart_strategy is RestartStrategy.DOCKER
                              else "its restart script"))

    async def updates() -> None:
        conn = await asyncpg.connect(libpq_url(url), password=password_of(url))
        try:
            for sql in RUNBOOK_SQL:
                await conn.execute(sql)
        finally:
            await conn.close()

    times.seconds["keys"] = await timed(updates)
    times.seconds["email"], times.notes["email"] = await emails_by_loop(
        settings, url, clients, email_window)
    conn = await asyncpg.connect(libpq_url(url), password=password_of(url))
    try:
        sample = [r["k"] for r in await conn.fetch(
            "SELECT owner_api_key AS k FROM sessions WHERE owner_api_key IS NOT NULL LIMIT $1",
            settings.verify_sample_size)]
    finally:
        await conn.close()
    api_log = folder.parent / "logs" / "api.log"
    times.seconds["verify"] = await timed(lambda: asyncio.to_thread(
        curl_and_grep, settings, sample, api_log))
    return times
