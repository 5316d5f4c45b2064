"""Signed requests sent to a serve process at a given concurrency, and what each got back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
import asyncpg

from bot.urls import libpq_url
from tests.slack.harness import SECRET
from tests.slackwire.requests import sign


class Burst:
    """`bodies` to `url` from `concurrency` clients; `answers[i]` is the HTTP status of body
    i, or None when it got none (refused, reset: the bot was stopping). `answered` is set once
    `signal_after` answers have come back."""

    def __init__(self, url: str, bodies: Sequence[bytes], concurrency: int,
                 signal_after: int | None = None) -> None:
        self.url, self.bodies, self.concurrency = url, bodies, concurrency
        self.answers: list[int | None] = [None] * len(bodies)
        self.answered = asyncio.Event()
        self._signal_after = signal_after if signal_after is not None else len(bodies)
        self._count = 0

    async def run(self) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(len(self.bodies)):
            queue.put_nowait(n)

        async def client(http: aiohttp.ClientSession) -> None:
            while not queue.empty():
                n = queue.get_nowait()
                body = self.bodies[n]
                try:
                    async with http.post(self.url, data=body, headers=sign(body, SECRET),
                                         timeout=aiohttp.ClientTimeout(total=30)) as answer:
                        await answer.read()
                        self.answers[n] = answer.status
                except (aiohttp.ClientError, TimeoutError):
                    pass
                self._count += 1
                if self._count >= self._signal_after:
                    self.answered.set()

        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.gather(*(client(http) for _ in range(self.concurrency)))
        self.answered.set()

    def acked(self) -> list[int]:
        return [n for n, status in enumerate(self.answers) if status == 200]


async def fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def inbox_unprocessed(url: str) -> int:
    rows = await fetch(url, "SELECT count(*) AS n FROM engine_inbox WHERE processed_at IS NULL")
    return int(rows[0]["n"])


async def refusals_by_actor(url: str) -> dict[str, int]:
    rows = await fetch(url, "SELECT actor, count(*) AS n FROM incident_events "
                            "WHERE kind = 'refused' GROUP BY actor")
    return {str(r["actor"]): int(r["n"]) for r in rows}
