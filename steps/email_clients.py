"""Step 5: email each client its new key — at most once per run, whatever happens.

For each old->new hash in the rotation ledger: the contact by OLD hash, the key read from the
target at send time (it never passes through anything else), the runbook's email through the
mailer. The ledger row goes to `sending` before the mailer is called and to `sent` / `failed`
after: a `sending` row found later means the bot died mid-send and delivery is uncertain, so it
is reported, never re-sent blindly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from bot.domain.steps import StepName
from bot.settings import Settings
from steps.directory import Contact, load_directory
from steps.ledgers import NotificationRecord, NotificationStatus
from steps.mailers import Mailer, PermanentMailError, TransientMailError, build_mailer
from steps.protocol import CheckResult, Outcome, OutputSink, Plan, StepContext, StepError
from steps.target_db import connect

DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "key_rotation_email.txt"
BACKOFF_SECONDS = 0.2
KEY_BATCH = 500
S = NotificationStatus


@dataclass(frozen=True)
class Template:
    subject: str
    body: str

    @classmethod
    def load(cls, settings: Settings) -> Template:
        path = settings.email_template or DEFAULT_TEMPLATE
        first, _, body = path.read_text(encoding="utf-8").partition("\n")
        if not first.lower().startswith("subject:"):
            raise StepError(f"email template {path} must start with a 'Subject:' line")
        return cls(first.split(":", 1)[1].strip(), body.lstrip("\n"))

    def render(self, settings: Settings, contact: Contact, key: str, tag: str) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = self.subject
        message["From"] = settings.mail_from
        message["To"] = contact.email
        message["Message-ID"] = make_msgid(domain="rollback-bot")
        message["X-Rollback-Client"] = tag
        message.set_content(self.body.format(name=contact.name, new_key=key))
        return message


def masked(key_format: str) -> str:
    return "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" if key_format == "uuid4" else "x" * 43


class EmailClientsStep:
    name = StepName.EMAIL_CLIENTS

    async def plan(self, ctx: StepContext) -> Plan:
        s = ctx.settings
        directory = await load_directory(s)
        mapping = await ctx.rotations.mapping(ctx.run_id)
        records = await ctx.notifications.records(ctx.run_id)
        # Before step 4 has run, the clients are the hashes still on the target.
        olds = list(mapping) or await _pending_hashes(s)
        with_contact = [h for h in olds if h in directory.contacts]
        sent = sum(1 for h in with_contact if records.get(h, None) and records[h].status is S.SENT)
        sample = Template.load(s).render(
            s, Contact("Example Client", "client@example.test"), masked(s.key_format.value),
            "sample")
        return Plan(
            step=self.name,
            summary=f"email {len(with_contact) - sent:,} clients their new key via {s.mailer}; "
                    f"{len(olds) - len(with_contact):,} without a contact",
            facts={"recipients": len(with_contact), "without_contact": len(olds) -
                   len(with_contact), "already_sent": sent, "mailer": s.mailer.value},
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
            return CheckResult(False, f"{len(unsent)} clients with a contact not yet emailed")
        return CheckResult(True, "every client with a contact has been emailed")

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        s = ctx.settings
        template = Template.load(s)
        directory = await load_directory(s)
        mapping = await ctx.rotations.mapping(ctx.run_id)
        if not mapping:
            raise StepError("the rotation ledger is empty: run step 4 first")
        records = await ctx.notifications.records(ctx.run_id)
        uncertain = [h for h, r in records.items() if r.status is S.SENDING]
        queue: asyncio.Queue[tuple[str, str, Contact]] = asyncio.Queue(maxsize=KEY_BATCH)
        mailer = build_mailer(s, ctx.run_id)
        outcome: dict[str, NotificationRecord] = {}
        for old in mapping:
            if old not in directory.contacts and old not in records:
                record = NotificationRecord(old, S.NO_CONTACT)
                await ctx.notifications.save(ctx.run_id, record)
                outcome[old] = record
        todo = [(old, new) for old, new in mapping.items() if old in directory.contacts
                and (old not in records or records[old].status is S.FAILED)]
        emit(f"{len(todo):,} emails to send, {len(uncertain)} uncertain from an earlier attempt")

        async def produce() -> None:
            async with connect(s.target_database_url.get_secret_value()) as conn:
                for start in range(0, len(todo), KEY_BATCH):
                    chunk = dict(todo[start:start + KEY_BATCH])  # old -> new
                    keys = await _keys_for(conn, list(chunk.values()))
                    for old, new in chunk.items():
                        if new in keys:
                            await queue.put((old, keys[new], directory.contacts[old]))
                        else:
                            outcome[old] = NotificationRecord(
                                old, S.FAILED, directory.contacts[old].email,
                                error="new key not found on the target")
                            await ctx.notifications.save(ctx.run_id, outcome[old])

        async def work() -> None:
            while True:
                old, key, contact = await queue.get()
                try:
                    outcome[old] = await self._deliver(ctx, mailer, template, old, key, contact)
                finally:
                    queue.task_done()
                verb = "sent" if outcome[old].status is S.SENT else "FAILED"
                emit(f"client {old[:8]}: {verb}"
                     + (f" ({outcome[old].error})" if outcome[old].error else ""))

        workers = [asyncio.create_task(work()) for _ in range(s.email_concurrency)]
        try:
            await produce()
            await queue.join()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await mailer.close()
        final = {**records, **outcome}
        facts = {
            "sent": sum(1 for r in final.values() if r.status is S.SENT),
            "failed": {h[:8]: r.error for h, r in final.items() if r.status is S.FAILED},
            "no_contact": sorted(h[:8] for h, r in final.items() if r.status is S.NO_CONTACT),
            "uncertain": sorted(h[:8] for h in uncertain),
        }
        if facts["failed"]:
            raise StepError(f"{len(facts['failed'])} of {len(todo)} emails failed: "
                            + "; ".join(f"{h}: {e}" for h, e in list(facts["failed"].items())[:5])
                            + ". Retry sends only to those not yet sent.")
        return Outcome(summary=f"{facts['sent']:,} emails sent, {len(facts['no_contact'])} "
                               f"clients without a contact", facts=facts)

    async def _deliver(self, ctx: StepContext, mailer: Mailer, template: Template, old: str,
                       key: str, contact: Contact) -> NotificationRecord:
        attempts = 0
        error: str | None = None
        await ctx.notifications.save(ctx.run_id,
                                     NotificationRecord(old, S.SENDING, contact.email, attempts))
        while attempts < ctx.settings.email_max_attempts:
            attempts += 1
            try:
                await mailer.send(template.render(ctx.settings, contact, key, old[:12]))
                record = NotificationRecord(old, S.SENT, contact.email, attempts)
                break
            except TransientMailError as exc:
                error = str(exc)
                await asyncio.sleep(BACKOFF_SECONDS * 2 ** (attempts - 1))
            except PermanentMailError as exc:
                error = str(exc)
                attempts = ctx.settings.email_max_attempts
        else:
            record = NotificationRecord(old, S.FAILED, contact.email, attempts, error)
        await ctx.notifications.save(ctx.run_id, record)
        return record


async def _keys_for(conn: object, new_hashes: list[str]) -> dict[str, str]:
    rows = await conn.fetch(  # type: ignore[attr-defined]
        "SELECT owner_api_key_hash AS h, min(owner_api_key) AS k FROM ("
        " SELECT owner_api_key_hash, owner_api_key FROM sessions"
        "  WHERE owner_api_key_hash = ANY($1) AND owner_api_key IS NOT NULL"
        " UNION ALL SELECT owner_api_key_hash, owner_api_key FROM assistants"
        "  WHERE owner_api_key_hash = ANY($1) AND owner_api_key IS NOT NULL) t GROUP BY 1",
        new_hashes)
    return {r["h"]: r["k"] for r in rows}


async def _pending_hashes(settings: Settings) -> list[str]:
    async with connect(settings.target_database_url.get_secret_value()) as conn:
        rows = await conn.fetch("SELECT owner_api_key_hash AS h FROM sessions WHERE"
                                " owner_api_key_hash IS NOT NULL UNION SELECT owner_api_key_hash"
                                " FROM assistants WHERE owner_api_key_hash IS NOT NULL")
    return [r["h"] for r in rows]
