"""A stand-in for the restarted Phase 2 api while step 4 runs: inserts and updates at a steady
rate, each write timed.

Writes as a client still holding its OLD key would (the bench's template gives client N the
key `client-N`, its hash sha256 of that): half are new sessions under that key and hash, half
updates of existing sessions (a new model; a row not yet re-keyed keeps its old hash, and the
update may move it to a page already rewritten). The rate is held by a schedule, not by the
writes' own pace (an open loop), so a write the rotation slows shows up as latency, not as
fewer writes. Every row written is remembered, to check afterwards that it ended re-keyed.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import dataclass, field

import asyncpg

from bot.urls import libpq_url

INSERT_SQL = ("INSERT INTO sessions (id, model, owner_api_key, owner_api_key_hash) "
              "VALUES (gen_random_uuid(), 'claude-sonnet', $1, $2) RETURNING id")
UPDATE_SQL = "UPDATE sessions SET model = $2, updated_at = now() WHERE id = $1"
SAMPLE_IDS_SQL = "SELECT id FROM sessions TABLESAMPLE SYSTEM (1) LIMIT $1"

# $1 ids -> how many of them still carry a hash that is not their own key's sha256 (an old one).
NOT_REKEYED_SQL = """
    SELECT count(*) FROM sessions WHERE id = ANY($1::uuid[])
       AND (owner_api_key IS NULL
            OR owner_api_key_hash <> encode(sha256(owner_api_key::bytea), 'hex')
            OR owner_api_key LIKE 'client-%')
"""


@dataclass
class Writes:
    """Latency of every write, split by whether the rotation was running, and what was written."""

    alone: list[float] = field(default_factory=list)
    rotating: list[float] = field(default_factory=list)
    ids: set[object] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    count: int = 0

    def rate(self) -> float:
        return self.count / max(time.perf_counter() - self.started, 1e-9)


class Writer:
    def __init__(self, url: str, clients: int, rate: float, connections: int = 4) -> None:
        self.url, self.clients, self.rate, self.connections = url, clients, rate, connections
        self.writes = Writes()
        self.rotating = False
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        conn = await asyncpg.connect(libpq_url(self.url))
        try:
            self._existing = [r["id"] for r in await conn.fetch(SAMPLE_IDS_SQL, 5_000)]
        finally:
            await conn.close()
        self.writes.started = time.perf_counter()
        self._tasks = [asyncio.create_task(self._loop(n)) for n in range(self.connections)]

    async def stop(self) -> Writes:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.writes

    async def _loop(self, n: int) -> None:
        conn = await asyncpg.connect(libpq_url(self.url))
        interval = self.connections / self.rate
        rng = random.Random(n)
        due = time.perf_counter() + interval * n / self.connections
        try:
            while not self._stop.is_set():
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                due += interval
                rotating = self.rotating
                began = time.perf_counter()
                try:
                    await self._write(conn, rng)
                except (asyncpg.PostgresError, OSError) as exc:
                    self.writes.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                (self.writes.rotating if rotating else self.writes.alone).append(
                    time.perf_counter() - began)
                self.writes.count += 1
        finally:
            await conn.close()

    async def _write(self, conn: asyncpg.Connection, rng: random.Random) -> None:
        if rng.random() < 0.5:
            key = f"client-{rng.randrange(self.clients)}"
            self.writes.ids.add(await conn.fetchval(
                INSERT_SQL, key, hashlib.sha256(key.encode()).hexdigest()))
        else:
            row = rng.choice(self._existing)
            await conn.execute(UPDATE_SQL, row, f"claude-{rng.randrange(1000)}")
            self.writes.ids.add(row)

    async def not_rekeyed(self) -> int:
        """How many rows it wrote still hold an old hash (or no key)."""
        conn = await asyncpg.connect(libpq_url(self.url))
        try:
            return int(await conn.fetchval(NOT_REKEYED_SQL, list(self.writes.ids)))
        finally:
            await conn.close()


def quantile(values: list[float], q: float) -> float:
    ranked = sorted(values) or [0.0]
    return ranked[min(len(ranked) - 1, max(0, round(q * len(ranked)) - 1))]
