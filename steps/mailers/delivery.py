"""Deliver one email per client through a mailer, at most once, with memory that stays flat.

Keys are read from the target in chunks of KEY_BATCH into a small queue drained by
`email_concurrency` workers. Each client's ledger row goes to `sending` as late as the mailer
allows — the SMTP server accepted the recipient, just before DATA; just before the outbox file
is written — durably, before the mailer goes on; and to `sent` / `failed` after. A crash before
the mark leaves the client unmarked: nothing was handed over, a retry sends it. A worker
writes a client's outcome in the same transaction as the next client's `sending` mark (or
alone, before it waits for more work): one ledger write per email instead of two, and an
outcome is never left unwritten while its worker is idle.
A failure once DATA had started (`UncertainMailError`) is never retried: the client stays
`sending`, uncertain, for a Resend. Transient failures are retried with exponential backoff;
when BREAKER_MIN (or twice the workers) clients in a row fail transiently, the mail server is
taken to be down: nothing more is attempted, and the clients never tried stay unmarked.

Bad data never stalls the step. Anything that goes wrong for one client (a message that cannot
be built, a mailer error of any kind) fails that client alone, with its reason, and the others
go on. A ledger write that fails (or takes longer than LEDGER_SECONDS) stops the sending
cleanly: no new client is started, the ones in flight finish, and the step fails saying so.
No worker waits for ever: the producer always posts its end-of-work marks (never blocking), and
a worker re-checks its own cancellation between clients, because on Python 3.11 a `wait_for`
inside the mail client can swallow the cancel that a failing sibling sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg

from bot.domain.ledgers import NotificationRecord, NotificationStatus
from bot.domain.step_protocol import OutputSink, StepContext, StepError
from steps.directory import Contact
from steps.mailers import (
    Mailer,
    MarkNotWritten,
    PermanentMailError,
    TransientMailError,
    UncertainMailError,
    build_mailer,
)
from steps.mailers.template import Template
from steps.target_db import connect
from steps.target_sql import KEYS_BY_NEW_HASH_SQL

BACKOFF_SECONDS = 0.2
KEY_BATCH = 500
BREAKER_MIN = 5
LEDGER_SECONDS = 60.0  # one ledger write; longer means the bot database is stalled
REASON_CHARS = 200
S = NotificationStatus
Job = tuple[str, str, Contact]  # old hash, new key, contact


def reason_of(exc: BaseException) -> str:
    """A one-line reason for a client's failure (never the message body: that holds the key)."""
    text = " ".join(str(exc).split())
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:REASON_CHARS]


def _stop_if_cancelled() -> None:
    """Raise the cancellation that an inner `wait_for` may have swallowed (Python 3.11)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


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
    ledger_error: str | None = None  # why the ledger could not be written: everything stops

    @property
    def stopped(self) -> bool:
        return self.halted or self.ledger_error is not None

    async def send_all(self, todo: list[tuple[str, str]]) -> None:
        """`todo` is (old hash, new hash) of clients with a contact, not yet sent."""
        if not todo:
            return
        workers = min(self.ctx.settings.email_concurrency, len(todo))
        # Unbounded, so the end-of-work marks never wait; `room` bounds the jobs in it instead.
        queue: asyncio.Queue[Job | None] = asyncio.Queue()
        room = asyncio.Semaphore(2 * workers)
        mailer = build_mailer(self.ctx.settings, self.ctx.run_id)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._produce(queue, room, todo, workers))
                for _ in range(workers):
                    group.create_task(self._work(queue, room, mailer, len(todo),
                                                 max(BREAKER_MIN, 2 * workers)))
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None
        finally:
            await mailer.close()
        if self.ledger_error is not None:
            untried = len(todo) - self.handled - self.not_found
            raise StepError(f"the notification ledger could not be written "
                            f"({self.ledger_error}): sending stopped after {self.handled} "
                            f"clients, {untried} not attempted; a client shown as `sending` "
                            "may have been emailed. Retry sends only to those not yet sent.")
        if self.halted:
            untried = len(todo) - self.handled - self.not_found
            self.problems.append(f"stopped after {self.streak} clients in a row failed "
                                 f"transiently (is the mail server up?); {untried} clients "
                                 f"were not attempted")

    async def _save(self, *records: NotificationRecord) -> bool:
        """Write to the ledger; False (and everything stops) if it cannot be written."""
        if not records:
            return True
        try:
            async with asyncio.timeout(LEDGER_SECONDS):
                await self.ctx.notifications.save(self.ctx.rotation_id, *records)
        except Exception as exc:
            if self.ledger_error is None:
                self.ledger_error = reason_of(exc)
            return False
        return True

    async def _produce(self, queue: asyncio.Queue[Job | None], room: asyncio.Semaphore,
                       todo: list[tuple[str, str]], workers: int) -> None:
        try:
            async with connect(self.ctx.settings.target_database_url.get_secret_value()) as conn:
                for start in range(0, len(todo), KEY_BATCH):
                    if self.stopped:
                        break
                    chunk = dict(todo[start:start + KEY_BATCH])  # old -> new
                    keys = await _keys_for(conn, list(chunk.values()))
                    for old, new in chunk.items():
                        if self.stopped:
                            break
                        contact = self.contacts[old]
                        if new in keys:
                            await room.acquire()
                            # not pop: contacts sharing one hash (KEY_MODEL=service) share its key
                            queue.put_nowait((old, keys[new], contact))
                            continue
                        self.not_found += 1
                        self.final[old] = NotificationRecord(
                            old, S.FAILED, contact.email, error="new key not found on the target")
                        await self._save(self.final[old])
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            # In-flight sends still finish.
            self.problems.append(f"reading keys from the target failed ({type(exc).__name__})")
        finally:
            for _ in range(workers):
                queue.put_nowait(None)

    async def _work(self, queue: asyncio.Queue[Job | None], room: asyncio.Semaphore,
                    mailer: Mailer, total: int, breaker: int) -> None:
        every = max(1, total // 10)
        settle: NotificationRecord | None = None  # the last outcome, not yet in the ledger
        try:
            while True:
                _stop_if_cancelled()
                if settle is not None and queue.empty():
                    await self._save(settle)
                    settle = None
                job = await queue.get()
                if job is None:
                    break
                room.release()
                if self.stopped:
                    continue  # left unmarked: a retry sends it
                settle = await self._one(job, mailer, total, breaker, every, settle)
        finally:
            if settle is not None:
                await self._save(settle)

    async def _one(self, job: Job, mailer: Mailer, total: int, breaker: int, every: int,
                   settle: NotificationRecord | None) -> NotificationRecord | None:
        old, key, contact = job
        delivered = await self.deliver(mailer, old, key, contact, settle)
        if delivered is None:
            return None  # the ledger failed: `settle` went with it, nothing was sent
        record, transient = delivered
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
                      settle: NotificationRecord | None = None
                      ) -> tuple[NotificationRecord, bool] | None:
        """One client's email; its `sending` mark is written (with `settle`, an earlier
        outcome) when the mailer is about to hand the message over. Returns its record, not
        yet saved, and whether it failed only transiently. None when the ledger could not be
        written: then nothing is sent."""
        ctx, limit = self.ctx, self.ctx.settings.email_max_attempts
        try:
            message = self.template.render(ctx.settings, contact, key, old[:12])
        except Exception as exc:  # this client's data; the others go on
            failed = NotificationRecord(old, S.FAILED, contact.email, 0,
                                        f"the message could not be built: {reason_of(exc)}")
            return (failed, False) if await self._save(*([settle] if settle else [])) else None
        pending = [settle] if settle else []  # written with the mark, or at the end
        marked = False

        async def mark_sending() -> None:
            nonlocal marked
            if marked:
                return
            if not await self._save(*pending, NotificationRecord(old, S.SENDING,
                                                                 contact.email, 0)):
                raise MarkNotWritten
            marked = True
            pending.clear()

        status, attempts, error, transient = S.FAILED, 0, "", False
        while attempts < limit:
            attempts += 1
            try:
                await mailer.send(message, mark_sending)
            except MarkNotWritten:
                return None
            except UncertainMailError as exc:  # maybe delivered: left `sending`, never retried
                status, error = S.SENDING, str(exc)
                break
            except TransientMailError as exc:
                error, transient = str(exc), True
                if attempts < limit:
                    await asyncio.sleep(BACKOFF_SECONDS * 2 ** (attempts - 1))
                continue
            except PermanentMailError as exc:
                error, transient = str(exc), False
                break
            except Exception as exc:  # whatever else the mailer raised concerns this client
                error, transient = reason_of(exc), False
                break
            status, error, transient = S.SENT, "", False
            break
        if pending and not await self._save(*pending):  # never marked: nothing was sent
            return None
        return NotificationRecord(old, status, contact.email, attempts, error or None), transient


async def _keys_for(conn: asyncpg.Connection, new_hashes: list[str]) -> dict[str, str]:
    """new hash -> key, read from whichever row holds it (all of a client's rows agree)."""
    rows = await conn.fetch(KEYS_BY_NEW_HASH_SQL, new_hashes)
    return {r["hash"]: r["key"] for r in rows}
