"""Deliver one email per client through a mailer, at most once, with memory that stays flat.

Keys are read from the target in chunks of KEY_BATCH into a small queue drained by
`email_concurrency` workers. Each client's ledger row goes to `sending` before the hand-over and
to `sent` / `failed` after. A worker writes a client's outcome in the same transaction as the
next client's `sending` mark (or alone, before it waits for more work): one ledger write per
email instead of two, and an outcome is never left unwritten while its worker is idle.
Transient failures are retried with exponential backoff; when BREAKER_MIN (or twice the
workers) clients in a row fail transiently, the mail server is taken to be down: nothing more
is attempted, and the clients never tried stay unmarked for a retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg

from bot.domain.ledgers import NotificationRecord, NotificationStatus
from bot.domain.step_protocol import OutputSink, StepContext
from steps.directory import Contact
from steps.mailers import Mailer, PermanentMailError, TransientMailError, build_mailer
from steps.mailers.template import Template
from steps.target_db import connect

BACKOFF_SECONDS = 0.2
KEY_BATCH = 500
BREAKER_MIN = 5
S = NotificationStatus
Job = tuple[str, str, Contact]  # old hash, new key, contact


@dataclass
class Delivery:
    ctx: StepContext
    template: Template
    contacts: Mapping[str, Contact]
    emit: OutputSink
    final: dict[str, NotificationRecord]  # old hash -> latest record; updated as we go
    problems: list[str] = field(default_factory=list)  # what stopped the run early
    handled: int = 0  # clients handed to the mailer
    not_found: int = 0  # clients whose new key is on no target row
    streak: int = 0  # clients in a row that failed transiently
    halted: bool = False

    async def send_all(self, todo: list[tuple[str, str]]) -> None:
        """`todo` is (old hash, new hash) of clients with a contact, not yet sent."""
        if not todo:
            return
        workers = min(self.ctx.settings.email_concurrency, len(todo))
        queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=2 * workers)
        mailer = build_mailer(self.ctx.settings, self.ctx.run_id)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._produce(queue, todo, workers))
                for _ in range(workers):
                    group.create_task(self._work(queue, mailer, len(todo),
                                                 max(BREAKER_MIN, 2 * workers)))
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None
        finally:
            await mailer.close()
        if self.halted:
            untried = len(todo) - self.handled - self.not_found
            self.problems.append(f"stopped after {self.streak} clients in a row failed "
                                 f"transiently (is the mail server up?); {untried} clients "
                                 f"were not attempted")

    async def _produce(self, queue: asyncio.Queue[Job | None], todo: list[tuple[str, str]],
                       workers: int) -> None:
        try:
            async with connect(self.ctx.settings.target_database_url.get_secret_value()) as conn:
                for start in range(0, len(todo), KEY_BATCH):
                    if self.halted:
                        break
                    chunk = dict(todo[start:start + KEY_BATCH])  # old -> new
                    keys = await _keys_for(conn, list(chunk.values()))
                    for old, new in chunk.items():
                        if self.halted:
                            break
                        contact = self.contacts[old]
                        if new in keys:
                            await queue.put((old, keys[new], contact))
                            continue
                        self.not_found += 1
                        self.final[old] = NotificationRecord(
                            old, S.FAILED, contact.email, error="new key not found on the target")
                        await self.ctx.notifications.save(self.ctx.run_id, self.final[old])
        except (asyncpg.PostgresError, OSError) as exc:  # in-flight sends still finish
            self.problems.append(f"reading keys from the target failed ({type(exc).__name__})")
        for _ in range(workers):
            await queue.put(None)

    async def _work(self, queue: asyncio.Queue[Job | None], mailer: Mailer, total: int,
                    breaker: int) -> None:
        every = max(1, total // 10)
        settle: NotificationRecord | None = None  # the last outcome, not yet in the ledger
        try:
            while True:
                if settle is not None and queue.empty():
                    await self.ctx.notifications.save(self.ctx.run_id, settle)
                    settle = None
                job = await queue.get()
                if job is None:
                    break
                if self.halted:
                    continue  # left unmarked: a retry sends it
                settle = await self._one(job, mailer, total, breaker, every, settle)
        finally:
            if settle is not None:
                await self.ctx.notifications.save(self.ctx.run_id, settle)

    async def _one(self, job: Job, mailer: Mailer, total: int, breaker: int, every: int,
                   settle: NotificationRecord | None) -> NotificationRecord:
        old, key, contact = job
        record, transient = await self.deliver(mailer, old, key, contact, settle)
        self.final[old] = record
        self.handled += 1
        self.streak = self.streak + 1 if transient else 0
        if self.streak >= breaker:
            self.halted = True
        if record.status is S.FAILED:
            self.emit(f"client {old[:8]}: FAILED after {record.attempts} attempts "
                      f"({record.error})")
        if self.handled % every == 0 or self.handled == total:
            self.emit(f"{self.handled:,}/{total:,} handled")
        return record

    async def deliver(self, mailer: Mailer, old: str, key: str, contact: Contact,
                      settle: NotificationRecord | None = None) -> tuple[NotificationRecord, bool]:
        """One client's email, after its `sending` mark (written with `settle`, an earlier
        outcome); returns its record, not yet saved, and whether it failed only transiently."""
        ctx, limit = self.ctx, self.ctx.settings.email_max_attempts
        sending = NotificationRecord(old, S.SENDING, contact.email, 0)
        await ctx.notifications.save(ctx.run_id, *([settle] if settle else []), sending)
        message = self.template.render(ctx.settings, contact, key, old[:12])
        status, attempts, error, transient = S.FAILED, 0, "", False
        while attempts < limit:
            attempts += 1
            try:
                await mailer.send(message)
            except TransientMailError as exc:
                error, transient = str(exc), True
                if attempts < limit:
                    await asyncio.sleep(BACKOFF_SECONDS * 2 ** (attempts - 1))
                continue
            except PermanentMailError as exc:
                error, transient = str(exc), False
                break
            status, error, transient = S.SENT, "", False
            break
        return NotificationRecord(old, status, contact.email, attempts, error or None), transient


async def _keys_for(conn: asyncpg.Connection, new_hashes: list[str]) -> dict[str, str]:
    """new hash -> key, read from whichever row holds it (all of a client's rows agree)."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (h) h, k FROM ("
        " SELECT owner_api_key_hash AS h, owner_api_key AS k FROM sessions"
        "  WHERE owner_api_key_hash = ANY($1) AND owner_api_key IS NOT NULL"
        " UNION ALL SELECT owner_api_key_hash, owner_api_key FROM assistants"
        "  WHERE owner_api_key_hash = ANY($1) AND owner_api_key IS NOT NULL) t ORDER BY h",
        new_hashes)
    return {r["h"]: r["k"] for r in rows}
