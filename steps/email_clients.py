"""Step 5: email each client its new key — at most once per run, whatever happens.

For each old->new hash in the rotation ledger: the contact by OLD hash, the key read from the
target at send time (it never passes through anything else), the runbook's email through the
mailer. The ledger row goes to `sending` before the mailer is called and to `sent` / `failed`
after: a `sending` row found later means the bot died mid-send and delivery is uncertain, so it
is reported, never re-sent blindly.

Work is streamed: keys are read in chunks of KEY_BATCH into a small queue drained by
`email_concurrency` workers, so memory stays flat whatever the number of clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import asyncpg

from bot.domain.steps import StepName
from bot.settings import Settings
from steps.directory import Contact, Directory, load_directory
from steps.ledgers import NotificationRecord, NotificationStatus
from steps.mailers import Mailer, PermanentMailError, TransientMailError, build_mailer
from steps.mailers.template import Template, masked
from steps.protocol import CheckResult, Outcome, OutputSink, Plan, StepContext, StepError
from steps.target_db import connect

__all__ = ["EmailClientsStep", "Template", "masked"]

BACKOFF_SECONDS = 0.2
KEY_BATCH = 500
S = NotificationStatus
Job = tuple[str, str, Contact]  # old hash, new key, contact


def _todo(mapping: Mapping[str, str], directory: Directory,
          records: Mapping[str, NotificationRecord]) -> list[tuple[str, str]]:
    """Clients with a contact not yet sent nor in flight: new, failed, or newly listed."""
    return [(old, new) for old, new in mapping.items() if old in directory.contacts
            and (old not in records or records[old].status in (S.FAILED, S.NO_CONTACT))]


class EmailClientsStep:
    name = StepName.EMAIL_CLIENTS

    async def plan(self, ctx: StepContext) -> Plan:
        s = ctx.settings
        template = Template.load(s)
        directory = await load_directory(s)
        mapping = await ctx.rotations.mapping(ctx.run_id)
        records = await ctx.notifications.records(ctx.run_id)
        # Before step 4 has run, the clients are the hashes still on the target.
        olds = list(mapping) or await _owner_hashes(s)
        with_contact = [h for h in olds if h in directory.contacts]
        status = {h: records[h].status for h in with_contact if h in records}
        sent = sum(1 for st in status.values() if st is S.SENT)
        uncertain = sum(1 for st in status.values() if st is S.SENDING)
        sample = template.render(s, Contact("Example Client", "client@example.test"),
                                 masked(s.key_format.value), "sample")
        return Plan(
            step=self.name,
            summary=f"email {len(with_contact) - sent - uncertain:,} clients their new key via "
                    f"{s.mailer}; {len(olds) - len(with_contact):,} without a contact",
            facts={"recipients": len(with_contact), "without_contact": len(olds) -
                   len(with_contact), "already_sent": sent, "uncertain": uncertain,
                   "mailer": s.mailer.value},
            details=(f"Subject: {sample['Subject']}", *sample.get_content().strip().splitlines()),
            warnings=tuple(directory.problems[:5]),
        )

    async def check(self, ctx: StepContext) -> CheckResult:
        directory = await load_directory(ctx.settings)
        mapping = await ctx.rotations.mapping(ctx.run_id)
        records = await ctx.notifications.records(ctx.run_id)
        if not mapping:
            return CheckResult(False, "no client has been re-keyed in this run")
        unsent = [h for h in mapping if h in directory.contacts
                  and (h not in records or records[h].status is not S.SENT)]
        if unsent:
            return CheckResult(False, f"{len(unsent):,} clients with a contact not yet emailed")
        return CheckResult(True, "every client with a contact has been emailed")

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        s = ctx.settings
        started = time.monotonic()
        template = Template.load(s)
        directory = await load_directory(s)
        for problem in directory.problems[:20]:
            emit(f"client directory: {problem}")
        mapping = await ctx.rotations.mapping(ctx.run_id)
        if not mapping:
            raise StepError("the rotation ledger is empty: run step 4 first")
        records = await ctx.notifications.records(ctx.run_id)
        final = dict(records)
        for old in mapping:
            prior = records.get(old)
            if old not in directory.contacts and (prior is None or prior.status is S.FAILED):
                final[old] = NotificationRecord(old, S.NO_CONTACT)
                await ctx.notifications.save(ctx.run_id, final[old])
        uncertain = sorted(h for h, r in records.items() if r.status is S.SENDING)
        todo = _todo(mapping, directory, records)
        emit(f"{len(todo):,} emails to send, {len(uncertain):,} uncertain from an earlier "
             f"attempt (not re-sent)")
        problems = await self._send_all(ctx, template, directory, todo, final, emit)
        facts = {
            "sent": sum(1 for h in mapping if h in final and final[h].status is S.SENT),
            "sent_now": sum(1 for old, _ in todo if final[old].status is S.SENT),
            "failed": {h[:8]: r.error for h, r in final.items() if r.status is S.FAILED},
            "no_contact": sorted(h[:8] for h, r in final.items() if r.status is S.NO_CONTACT),
            "uncertain": [h[:8] for h in uncertain],
            "duration_s": round(time.monotonic() - started, 3),
        }
        summary = f"{facts['sent']:,} emails sent, {len(facts['no_contact']):,} clients " \
                  f"without a contact"
        if uncertain:
            summary += (f"; {len(uncertain)} uncertain (the bot stopped mid-send, not re-sent:"
                        f" {', '.join(facts['uncertain'][:10])})")
        if facts["failed"] or problems:
            recipients = sum(1 for h in mapping if h in directory.contacts)
            failed = "; ".join(f"{h}: {e}" for h, e in list(facts["failed"].items())[:5])
            raise StepError(f"{len(facts['failed'])} of {recipients} emails failed: {failed}"
                            + "".join(f" {p}." for p in problems)
                            + f" ({summary}). Retry sends only to those not yet sent.")
        return Outcome(summary=summary, facts=facts)

    async def _send_all(self, ctx: StepContext, template: Template, directory: Directory,
                        todo: list[tuple[str, str]], final: dict[str, NotificationRecord],
                        emit: OutputSink) -> list[str]:
        """Feeds the workers from the target in chunks; returns problems that stopped feeding."""
        s = ctx.settings
        workers = min(s.email_concurrency, max(len(todo), 1))
        queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=2 * workers)
        problems: list[str] = []
        every = max(1, len(todo) // 10)
        done = [0]

        async def produce() -> None:
            try:
                async with connect(s.target_database_url.get_secret_value()) as conn:
                    for start in range(0, len(todo), KEY_BATCH):
                        chunk = dict(todo[start:start + KEY_BATCH])  # old -> new
                        keys = await _keys_for(conn, list(chunk.values()))
                        for old, new in chunk.items():
                            contact = directory.contacts[old]
                            if new in keys:
                                await queue.put((old, keys.pop(new), contact))
                                continue
                            final[old] = NotificationRecord(
                                old, S.FAILED, contact.email,
                                error="new key not found on the target")
                            await ctx.notifications.save(ctx.run_id, final[old])
            except (asyncpg.PostgresError, OSError) as exc:  # in-flight sends still finish
                problems.append(f"reading keys from the target failed ({type(exc).__name__})")
            for _ in range(workers):
                await queue.put(None)

        async def work(mailer: Mailer) -> None:
            while (job := await queue.get()) is not None:
                old, key, contact = job
                final[old] = record = await self._deliver(ctx, mailer, template, old, key,
                                                          contact)
                done[0] += 1
                if record.status is S.FAILED:
                    emit(f"client {old[:8]}: FAILED after {record.attempts} attempts "
                         f"({record.error})")
                if done[0] % every == 0 or done[0] == len(todo):
                    emit(f"{done[0]:,}/{len(todo):,} handled")

        if not todo:
            return problems
        mailer = build_mailer(s, ctx.run_id)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(produce())
                for _ in range(workers):
                    group.create_task(work(mailer))
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None
        finally:
            await mailer.close()
        return problems

    async def _deliver(self, ctx: StepContext, mailer: Mailer, template: Template, old: str,
                       key: str, contact: Contact) -> NotificationRecord:
        limit = ctx.settings.email_max_attempts
        await ctx.notifications.save(ctx.run_id,
                                     NotificationRecord(old, S.SENDING, contact.email, 0))
        message = template.render(ctx.settings, contact, key, old[:12])
        status, attempts, error = S.FAILED, 0, ""
        while attempts < limit:
            attempts += 1
            try:
                await mailer.send(message)
            except TransientMailError as exc:
                error = str(exc)
                if attempts < limit:
                    await asyncio.sleep(BACKOFF_SECONDS * 2 ** (attempts - 1))
                continue
            except PermanentMailError as exc:
                error = str(exc)
                break
            status, error = S.SENT, ""
            break
        record = NotificationRecord(old, status, contact.email, attempts, error or None)
        await ctx.notifications.save(ctx.run_id, record)
        return record


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


async def _owner_hashes(settings: Settings) -> list[str]:
    async with connect(settings.target_database_url.get_secret_value()) as conn:
        rows = await conn.fetch("SELECT owner_api_key_hash AS h FROM sessions WHERE"
                                " owner_api_key_hash IS NOT NULL UNION SELECT owner_api_key_hash"
                                " FROM assistants WHERE owner_api_key_hash IS NOT NULL")
    return [r["h"] for r in rows]
