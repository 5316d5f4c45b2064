"""Step 5: email each client its new key — at most once per rotation, whatever happens.

For each old->new hash in the rotation ledger: the contact by OLD hash, the key read from the
target at send time (it never passes through anything else), the runbook's email through the
mailer. The ledger row goes to `sending` before the mailer is called and to `sent` / `failed`
after: a `sending` row found later means the bot died mid-send and delivery is uncertain, so it
is reported, never re-sent blindly.

A run after a closed rotation has its own, empty one: step 4 found every row keyed. Its step 5
then says which run's rotation keyed and mailed everyone, is done (its check), and mails nobody.

The sending itself (worker pool, retries, breaker) is `steps.mailers.delivery`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from bot.domain.ledgers import (
    ClosedRotationRecord,
    NotificationRecord,
    NotificationStatus,
    closed_line,
    continuing_line,
    rotation_progress,
)
from bot.domain.resend import UNCONFIRMED
from bot.domain.step_protocol import CheckResult, Outcome, OutputSink, Plan, StepContext, StepError
from bot.domain.steps import StepName
from bot.settings import MailerKind, Settings, SmtpSecurity
from steps.directory import Contact, Directory, fan_out, load_directory
from steps.mail_canary import canary, canary_plan_line
from steps.mailers import transport
from steps.mailers.delivery import Delivery
from steps.mailers.template import Template, masked
from steps.service_key import mailable
from steps.target_db import clients_without_key, owner_hashes

__all__ = ["EmailClientsStep", "Template", "masked"]

S = NotificationStatus


def _todo(mapping: Mapping[str, str], directory: Directory,
          records: Mapping[str, NotificationRecord]) -> list[tuple[str, str]]:
    """Clients with a contact not yet sent nor in flight: new, failed, or newly listed."""
    return [(old, new) for old, new in mapping.items() if old in directory.contacts
            and (old not in records or records[old].status in (S.FAILED, S.NO_CONTACT))]


async def _recipients(ctx: StepContext, directory: Directory, mapping: Mapping[str, str]
                      ) -> tuple[dict[str, str], Directory, list[str]]:
    """One entry per contact to mail (a hash may list several), and in KEY_MODEL=service the
    old hashes left out because the door refuses their keys."""
    door, refused = mailable(ctx.settings, mapping)
    recipients, directory = fan_out(door, directory)
    return recipients, directory, refused


class EmailClientsStep:
    name = StepName.EMAIL_CLIENTS

    async def plan(self, ctx: StepContext) -> Plan:
        s = ctx.settings
        mapping = await ctx.rotations.mapping(ctx.rotation_id)
        closed = await _closed_before(ctx, mapping)
        if closed is not None:
            return _nothing_left_plan(s, closed)
        template = Template.load(s)
        directory = await load_directory(s)
        records = await ctx.notifications.records(ctx.rotation_id)
        continuing = ((continuing_line(ctx.rotation_id, rotation_progress(mapping, records)),)
                      if ctx.continues_rotation else ())
        # Before step 4 has run, the clients are the hashes still on the target.
        mapping = mapping or {h: h for h in await _owner_hashes(s)}
        olds, directory, _ = await _recipients(ctx, directory, mapping)
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
            details=(*continuing, f"Subject: {sample['Subject']}",
                     *sample.get_content().strip().splitlines(),
                     *await _transport_plan(s), canary_plan_line(s, olds, directory)),
            warnings=(*_refused_rows(directory), *await _plaintext_warning(s)),
        )

    async def check(self, ctx: StepContext) -> CheckResult:
        mapping = await ctx.rotations.mapping(ctx.rotation_id)
        closed = await _closed_before(ctx, mapping)
        if closed is not None:
            return CheckResult(True, closed_line(closed))
        directory = await load_directory(ctx.settings)
        records = await ctx.notifications.records(ctx.rotation_id)
        mapping, directory, _ = await _recipients(ctx, directory, mapping)
        if not mapping:
            if not await _owner_hashes(ctx.settings):
                return CheckResult(True, "the target has no clients to email")
            return CheckResult(False, "no client has been re-keyed in this run")
        unsent = [h for h in mapping if h in directory.contacts
                  and (h not in records or records[h].status is not S.SENT)]
        if unsent:
            return CheckResult(False, f"{len(unsent):,} clients with a contact not yet emailed")
        return CheckResult(True, "every client with a contact has been emailed")

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        s = ctx.settings
        started = time.monotonic()
        mapping = await ctx.rotations.mapping(ctx.rotation_id)
        if not mapping:
            closed = await _closed_before(ctx, mapping)
            if closed is None:
                raise StepError("the rotation ledger is empty: run step 4 first")
            emit(closed_line(closed))
            return Outcome(summary=f"nobody mailed: {closed_line(closed)}",
                           facts={"sent_now": 0, "closed_rotation": closed.rotation_id[:8]})
        template = Template.load(s)
        directory = await load_directory(s)
        for problem in directory.problems[:20]:
            emit(f"client directory: {problem}")
        mapping, directory, refused = await _recipients(ctx, directory, mapping)
        for old in refused:
            emit(f"client {old[:8]}: not mailed, KEY_MODEL=service and its new key is not the "
                 f"door key (the door refuses it)")
        await _transport_first(s, emit)  # a relay refused for plaintext: before the canary
        probed = await canary(s, mapping, directory, emit)  # fails before any ledger write
        records = await ctx.notifications.records(ctx.rotation_id)
        final = dict(records)
        for old in mapping:
            prior = records.get(old)
            if old not in directory.contacts and (prior is None or prior.status is S.FAILED):
                final[old] = NotificationRecord(old, S.NO_CONTACT)
                await ctx.notifications.save(ctx.rotation_id, final[old])
        uncertain = sorted(h for h, r in records.items() if r.status is S.SENDING)
        todo = _todo(mapping, directory, records)
        named = f": {', '.join(h[:8] for h in uncertain)}" if uncertain else ""
        emit(f"{len(todo):,} emails to send, {len(uncertain):,} uncertain from an earlier "
             f"attempt (not re-sent{named})")
        delivery = Delivery(ctx, template, directory.contacts, emit, final)
        await delivery.send_all(todo)
        sent = sum(1 for h in mapping if h in final and final[h].status is S.SENT)
        failed = {h[:8]: r.error or "" for h, r in final.items() if r.status is S.FAILED}
        no_contact = sorted(h[:8] for h, r in final.items() if r.status is S.NO_CONTACT)
        # Earlier attempts' and this one's: a send cut off after DATA is uncertain too.
        in_doubt = sorted(h[:8] for h, r in final.items() if r.status is S.SENDING)
        facts = {
            "sent": sent,
            "sent_now": sum(1 for old, _ in todo if old in final and final[old].status is S.SENT),
            "failed": failed, "no_contact": no_contact, "uncertain": in_doubt,
            "duration_s": round(time.monotonic() - started, 3),
        }
        if refused:
            facts["not_door_key"] = [h[:8] for h in refused]
        facts["canary"] = probed
        summary = f"{sent:,} emails sent, {len(no_contact):,} clients without a contact"
        if directory.problems:  # refused at load, named in the output with their line numbers
            facts["directory_refused"] = len(directory.problems)
            summary += f"; {len(directory.problems):,} directory rows refused"
        if in_doubt:
            summary += (f"; {len(in_doubt)} uncertain (cut off mid-send, not re-sent:"
                        f" {', '.join(in_doubt[:10])}; Resend needs two approvals)")
        if failed or delivery.problems:
            recipients = sum(1 for h in mapping if h in directory.contacts)
            reasons = "; ".join(f"{h}: {e}" for h, e in list(failed.items())[:5])
            raise StepError(f"{len(failed)} of {recipients} emails failed: {reasons}"
                            + "".join(f" {p}." for p in delivery.problems)
                            + f" ({summary}). Retry sends only to those not yet sent.")
        return Outcome(summary=summary, facts=facts)

    async def resend(self, ctx: StepContext, emit: OutputSink, clients: Sequence[str]
                     ) -> Outcome:
        """Send once more to the approved `clients` (ledger ids) that are still unconfirmed;
        each is recorded sent or failed. A client may now have its key twice: approved so."""
        started = time.monotonic()
        directory = await load_directory(ctx.settings)
        mapping = await ctx.rotations.mapping(ctx.rotation_id)
        recipients, directory, _ = await _recipients(ctx, directory, mapping)
        records = await ctx.notifications.records(ctx.rotation_id)
        todo = [(h, recipients[h]) for h in clients if h in recipients
                and h in directory.contacts and h in records and records[h].status in UNCONFIRMED]
        emit(f"resending to {len(todo)} unconfirmed clients: {', '.join(h[:8] for h, _ in todo)}")
        final = dict(records)
        delivery = Delivery(ctx, Template.load(ctx.settings), directory.contacts, emit, final)
        await delivery.send_all(todo)
        sent = [h[:8] for h, _ in todo if final[h].status is S.SENT]
        failed = {h[:8]: final[h].error or "" for h, _ in todo if final[h].status is S.FAILED}
        facts = {"resent": sent, "failed": failed, "duration_s": round(
            time.monotonic() - started, 3), "not_resent": [h[:8] for h in clients
                                                          if h not in dict(todo)]}
        summary = f"{len(sent)} of {len(todo)} unconfirmed clients emailed again"
        if failed or delivery.problems:
            reasons = "; ".join(f"{h}: {e}" for h, e in list(failed.items())[:5])
            raise StepError(f"{summary}; {len(failed)} failed: {reasons}"
                            + "".join(f" {p}." for p in delivery.problems)
                            + " They stay unconfirmed: Resend again needs two approvals.")
        return Outcome(summary=summary, facts=facts)


async def _transport_plan(s: Settings) -> tuple[str, ...]:
    if s.mailer is not MailerKind.SMTP:
        return ()
    return (transport.transport_line(s, await transport.is_loopback(s.smtp_host)),)


async def _plaintext_warning(s: Settings) -> tuple[str, ...]:
    if s.mailer is not MailerKind.SMTP or s.smtp_security is not SmtpSecurity.PLAINTEXT \
            or await transport.is_loopback(s.smtp_host):
        return ()
    return (f"SMTP_SECURITY=plaintext: every new key goes to {s.smtp_host} unencrypted",)


async def _transport_first(s: Settings, emit: OutputSink) -> None:
    """Step 5's first move with SMTP: open a connection as a message would. A relay refused
    for plaintext fails the step here, before the canary reads a key and before any login;
    any other trouble is left to the mailer's retries."""
    if s.mailer is not MailerKind.SMTP:
        return
    try:
        emit(await transport.confirm_transport(s))
    except transport.PlaintextRefused as exc:
        raise StepError(f"nobody was mailed: {exc}") from None
    except Exception as exc:  # reported; the mailer retries and says more
        emit(f"SMTP relay not reached before sending ({type(exc).__name__}: {exc})")


async def _closed_before(ctx: StepContext, mapping: Mapping[str, str]
                         ) -> ClosedRotationRecord | None:
    """The rotation an earlier run closed, when this run's own keyed nobody because every
    client already holds its key from that one: nothing is left to mail. None when this
    rotation keyed someone, when no rotation was ever closed, or when clients still wait for a
    key (step 4 has yet to run: a rollback after a new Phase 3)."""
    if mapping:
        return None
    closed = await ctx.rotations.last_closed()
    if closed is None:
        return None
    url = ctx.settings.target_database_url.get_secret_value()
    return closed if await clients_without_key(url) == 0 else None


def _nothing_left_plan(s: Settings, closed: ClosedRotationRecord) -> Plan:
    line = closed_line(closed)
    return Plan(
        step=StepName.EMAIL_CLIENTS, summary=line,
        facts={"recipients": 0, "closed_rotation": closed.rotation_id[:8],
               "already_sent": closed.progress.mailed, "mailer": s.mailer.value},
        details=(line, "this step's check is done: once approved it is recorded as already "
                       "done, and nobody is mailed"),
    )


def _refused_rows(directory: Directory, shown: int = 5) -> tuple[str, ...]:
    """The plan names the first refused directory rows and counts the rest."""
    rows = directory.problems
    more = (f"… and {len(rows) - shown} more refused directory rows (all in the step's output "
            "and in `rollback-bot check`)",) if len(rows) > shown else ()
    return (*rows[:shown], *more)


async def _owner_hashes(settings: Settings) -> list[str]:
    return sorted(await owner_hashes(settings.target_database_url.get_secret_value()))
