"""Step 5 on the sandbox after steps 2 and 4, with a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.ledgers import NotificationRecord, NotificationStatus
from bot.domain.memory_ledgers import MemoryNotificationLedger, MemoryRotationLedger
from bot.domain.step_protocol import StepContext, StepError
from bot.rehearsal.postgres import free_port
from bot.urls import libpq_url
from steps.email_clients import EmailClientsStep
from steps.rotate_keys import RotateKeysStep
from tests.fixtures.sandbox import SandboxSeed
from tests.fixtures.smtp import SmtpServer
from tests.steps.conftest import (
    add_assistants_only_client,
    memory_context,
    owned_rows,
    sql_context,
)
from tests.steps.sandbox_settings import sandbox_settings

pytestmark = pytest.mark.usefixtures("phase2_api")  # the canary tries keys on it
S = NotificationStatus
SUBJECT = "URGENT: API Key Rotation Required"


def smtp_settings(server: SmtpServer, seed: SandboxSeed) -> dict[str, Any]:
    return {"mailer": "smtp", "smtp_host": server.host, "smtp_port": server.port,
            "client_directory": seed.directory_csv, "mail_from": "oncall@example.test"}


def lines_of(message: EmailMessage) -> list[str]:
    return str(message.get_content()).splitlines()


async def rotate(ctx: StepContext) -> None:
    await RotateKeysStep().run(ctx, lambda _line: None)


async def key_of(ctx: StepContext, url: str) -> dict[str, str]:
    """Old hash -> the client's new key, read back from the target."""
    mapping = await ctx.rotations.mapping(ctx.run_id)
    key_by_hash = {h: k for h, k in (await owned_rows(url)).values() if k}
    return {old: key_by_hash[new] for old, new in mapping.items()}


async def test_each_client_with_a_contact_gets_exactly_one_email_with_its_own_key(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
    bot_db_url: str, bot_sessionmaker: async_sessionmaker[AsyncSession], sql_run_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = sandbox_settings(phase2_target_url, tmp_path, email_concurrency=3,
                                **smtp_settings(smtp_server, sandbox_seed))
    ctx = sql_context(settings, bot_sessionmaker, sql_run_id)
    step = EmailClientsStep()
    before = await step.plan(ctx)  # before step 4: the clients still on the target
    assert before.facts["recipients"] == 5 and before.facts["without_contact"] == 1
    await rotate(ctx)
    plan = await step.plan(ctx)
    assert dict(plan.facts) == {"recipients": 5, "without_contact": 1, "already_sent": 0,
                                "uncertain": 0, "mailer": "smtp"}
    assert plan.details[0] == f"Subject: {SUBJECT}"
    assert "Your new API key: xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" in plan.details
    assert not (await step.check(ctx)).done

    lines: list[str] = []
    outcome = await step.run(ctx, lines.append)

    keys = await key_of(ctx, phase2_target_url)
    for client in sandbox_seed.result.clients:
        received = smtp_server.to(client.email)
        assert len(received) == (1 if client.has_contact else 0), client.email
        if client.has_contact:
            assert received[0]["Subject"] == SUBJECT
            assert received[0]["From"] == "oncall@example.test"
            assert f"Your new API key: {keys[client.key_hash]}" in lines_of(received[0])
            assert f"Dear {client.name}," in received[0].get_content()
    no_contact = next(c for c in sandbox_seed.result.clients if not c.has_contact)
    assert outcome.facts["sent"] == 5 and outcome.facts["no_contact"] == [no_contact.key_hash[:8]]
    assert outcome.facts["failed"] == {} and outcome.facts["uncertain"] == []
    records = await ctx.notifications.records(sql_run_id)
    assert {h: r.status for h, r in records.items()} == {
        c.key_hash: S.SENT if c.has_contact else S.NO_CONTACT
        for c in sandbox_seed.result.clients}
    assert (await step.check(ctx)).done

    again = await step.run(ctx, lines.append)  # a second run sends nothing
    assert len(smtp_server.messages) == 5 and again.facts["sent_now"] == 0

    dump = await asyncio.create_subprocess_exec(
        "pg_dump", "--data-only", libpq_url(bot_db_url), stdout=asyncio.subprocess.PIPE)
    bot_db = (await dump.communicate())[0].decode()
    server_side = {"mail.log"}  # the recipient's server, not the bot
    bot_logs = "\n".join(r.getMessage() for r in caplog.records if r.name not in server_side)
    seen = "\n".join(lines) + outcome.summary + repr(dict(outcome.facts)) + bot_logs + bot_db
    assert sum(key in seen for key in keys.values()) == 0, "a key leaked"


async def test_rejected_recipient_fails_alone_and_a_retry_sends_nothing_twice(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
) -> None:
    contacts = [c for c in sandbox_seed.result.clients if c.has_contact]
    rejected = contacts[0]
    smtp_server.fail_permanent(rejected.email)
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path,
                                          **smtp_settings(smtp_server, sandbox_seed)))
    await rotate(ctx)
    lines: list[str] = []
    with pytest.raises(StepError, match=r"^1 of 5 emails failed: ") as failure:
        await EmailClientsStep().run(ctx, lines.append)
    assert rejected.key_hash[:8] in str(failure.value) and "550" in str(failure.value)
    assert any(line.startswith(f"client {rejected.key_hash[:8]}: FAILED after 1 attempts")
               for line in lines)
    records = await ctx.notifications.records(ctx.run_id)
    assert records[rejected.key_hash].status is S.FAILED
    assert records[rejected.key_hash].attempts == 1, "a 5xx is not retried"
    assert sorted(m["To"] for m in smtp_server.messages) == sorted(c.email for c in contacts[1:])
    assert not (await EmailClientsStep().check(ctx)).done

    with pytest.raises(StepError, match=r"^1 of 5 emails failed"):  # still refused
        await EmailClientsStep().run(ctx, lambda _line: None)
    assert len(smtp_server.messages) == 4
    smtp_server.handler.permanent.clear()  # the mailbox is fixed; Retry
    outcome = await EmailClientsStep().run(ctx, lambda _line: None)
    assert outcome.facts["sent"] == 5 and outcome.facts["sent_now"] == 1
    assert [len(smtp_server.to(c.email)) for c in contacts] == [1, 1, 1, 1, 1]
    assert (await EmailClientsStep().check(ctx)).done


async def test_transient_refusals_are_retried_with_backoff(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
) -> None:
    contacts = [c for c in sandbox_seed.result.clients if c.has_contact]
    smtp_server.fail_transient(contacts[1].email, times=2)
    smtp_server.fail_transient(contacts[2].email, times=5)
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path, email_max_attempts=3,
                                          **smtp_settings(smtp_server, sandbox_seed)))
    await rotate(ctx)
    with pytest.raises(StepError, match=r"^1 of 5 emails failed: .*451"):
        await EmailClientsStep().run(ctx, lambda _line: None)
    records = await ctx.notifications.records(ctx.run_id)
    assert (records[contacts[1].key_hash].status, records[contacts[1].key_hash].attempts) == (
        S.SENT, 3)
    assert (records[contacts[2].key_hash].status, records[contacts[2].key_hash].attempts) == (
        S.FAILED, 3)
    assert len(smtp_server.to(contacts[1].email)) == 1
    assert smtp_server.to(contacts[2].email) == []


async def test_a_client_in_flight_when_the_bot_died_is_reported_not_resent(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
) -> None:
    contacts = [c for c in sandbox_seed.result.clients if c.has_contact]
    in_flight = contacts[3]
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path,
                                          **smtp_settings(smtp_server, sandbox_seed)))
    await rotate(ctx)
    await ctx.notifications.save(ctx.run_id, NotificationRecord(
        in_flight.key_hash, S.SENDING, in_flight.email))
    plan = await EmailClientsStep().plan(ctx)
    assert plan.facts["uncertain"] == 1
    outcome = await EmailClientsStep().run(ctx, lambda _line: None)
    assert outcome.facts["uncertain"] == [in_flight.key_hash[:8]]
    assert "1 uncertain" in outcome.summary and in_flight.key_hash[:8] in outcome.summary
    assert smtp_server.to(in_flight.email) == []
    assert len(smtp_server.messages) == 4
    assert not (await EmailClientsStep().check(ctx)).done


async def test_a_connection_dropped_after_data_leaves_the_client_uncertain_mailed_once(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
) -> None:
    """The relay took the message and the connection broke before its 250: it may have been
    delivered, so it is not retried (4 attempts allowed) but left for a Resend."""
    contacts = [c for c in sandbox_seed.result.clients if c.has_contact]
    cut_off = contacts[2]
    smtp_server.drop_after_data(cut_off.email)
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path, email_max_attempts=4,
                                          **smtp_settings(smtp_server, sandbox_seed)))
    await rotate(ctx)
    outcome = await EmailClientsStep().run(ctx, lambda _line: None)
    assert outcome.facts["uncertain"] == [cut_off.key_hash[:8]]
    assert "1 uncertain" in outcome.summary and "Resend needs two approvals" in outcome.summary
    record = (await ctx.notifications.records(ctx.run_id))[cut_off.key_hash]
    assert (record.status, record.attempts) == (S.SENDING, 1)
    assert "after DATA" in (record.error or "")
    assert len(smtp_server.to(cut_off.email)) == 1
    assert len(smtp_server.messages) == 5  # the others were sent as usual
    assert not (await EmailClientsStep().check(ctx)).done
    again = await EmailClientsStep().run(ctx, lambda _line: None)  # a Retry: not re-sent
    assert again.facts["uncertain"] == [cut_off.key_hash[:8]]
    assert len(smtp_server.to(cut_off.email)) == 1


async def test_outbox_mailer_writes_one_eml_per_client(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path,
) -> None:
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path,
                                          client_directory=sandbox_seed.directory_csv))
    await rotate(ctx)
    await EmailClientsStep().run(ctx, lambda _line: None)
    outbox = tmp_path / "outbox"
    keys = await key_of(ctx, phase2_target_url)
    contacts = [c for c in sandbox_seed.result.clients if c.has_contact]
    assert sorted(p.name for p in outbox.iterdir()) == sorted(
        f"{ctx.run_id[:8]}-{c.key_hash[:12]}.eml" for c in contacts)
    for client in contacts:
        text = (outbox / f"{ctx.run_id[:8]}-{client.key_hash[:12]}.eml").read_text()
        assert f"To: {client.email}" in text and keys[client.key_hash] in text


async def test_operator_template_and_a_contact_listed_after_the_first_run(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
) -> None:
    template = tmp_path / "mail.txt"
    template.write_text("Subject: Your key changed\n\nHi {name}! {\"json\": true}\n"
                        "key={new_key}\n", encoding="utf-8")
    partial = tmp_path / "partial.csv"
    full = sandbox_seed.directory_csv.read_text(encoding="utf-8").splitlines()
    partial.write_text("\n".join(full[:-1]) + "\n", encoding="utf-8")  # last contact missing
    values = {**smtp_settings(smtp_server, sandbox_seed), "email_template": template}
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path,
                                          **{**values, "client_directory": partial}))
    await rotate(ctx)
    first = await EmailClientsStep().run(ctx, lambda _line: None)
    assert first.facts["sent"] == 4 and len(first.facts["no_contact"]) == 2
    keys = await key_of(ctx, phase2_target_url)
    message = smtp_server.messages[0]
    assert message["Subject"] == "Your key changed"
    assert message.get_content().startswith("Hi ") and '{"json": true}' in message.get_content()
    later = StepContext(ctx.run_id, sandbox_settings(phase2_target_url, tmp_path, **values),
                        ctx.rotations, ctx.notifications)
    second = await EmailClientsStep().run(later, lambda _line: None)
    assert second.facts["sent"] == 5 and second.facts["sent_now"] == 1
    late = [c for c in sandbox_seed.result.clients if c.has_contact][-1]
    (received,) = smtp_server.to(late.email)
    assert f"key={keys[late.key_hash]}" in lines_of(received)
    assert len(smtp_server.messages) == 5


async def test_a_template_without_the_key_placeholder_is_refused(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path,
) -> None:
    template = tmp_path / "mail.txt"
    template.write_text("Subject: Hello\n\nYour key changed.\n", encoding="utf-8")
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path, email_template=template,
                                          client_directory=sandbox_seed.directory_csv))
    with pytest.raises(StepError, match=r"has no \{new_key\} placeholder"):
        await EmailClientsStep().plan(ctx)


async def test_a_mail_server_that_is_down_stops_the_step_early_and_retry_sends_the_rest(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("steps.mailers.delivery.BREAKER_MIN", 2)
    down = {**smtp_settings(smtp_server, sandbox_seed), "smtp_port": free_port(),
            "email_concurrency": 1, "email_max_attempts": 1}
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path, **down))
    await rotate(ctx)
    with pytest.raises(StepError, match=r"^2 of 5 emails failed: .* stopped after 2 clients "
                                        r"in a row failed transiently .* 3 clients were not "
                                        r"attempted"):
        await EmailClientsStep().run(ctx, lambda _line: None)
    records = await ctx.notifications.records(ctx.run_id)
    assert sorted(r.status for r in records.values()) == [S.FAILED, S.FAILED, S.NO_CONTACT]
    up = StepContext(ctx.run_id, sandbox_settings(
        phase2_target_url, tmp_path, **smtp_settings(smtp_server, sandbox_seed)),
        ctx.rotations, ctx.notifications)
    outcome = await EmailClientsStep().run(up, lambda _line: None)
    assert outcome.facts["sent_now"] == 5
    assert sorted(m["To"] for m in smtp_server.messages) == sorted(
        c.email for c in sandbox_seed.result.clients if c.has_contact)


async def test_nothing_to_email_on_a_target_without_clients(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path,
) -> None:
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path,
                                          client_directory=sandbox_seed.directory_csv))
    assert not (await EmailClientsStep().check(ctx)).done
    conn = await asyncpg.connect(libpq_url(phase2_target_url))
    try:
        await conn.execute("UPDATE sessions SET owner_api_key_hash = NULL")
        await conn.execute("UPDATE assistants SET owner_api_key_hash = NULL")
    finally:
        await conn.close()
    check = await EmailClientsStep().check(ctx)
    assert check.done and check.reason == "the target has no clients to email"


# --- bad data never stalls the step ------------------------------------------------------

HANG_GUARD_SECONDS = 120  # not a measurement: a stalled step fails the test instead of hanging


async def hostile_directory(seed: SandboxSeed, url: str, path: Path) -> tuple[
        list[tuple[str, str]], list[str]]:
    """A directory of the seed's clients and four more, where half the addresses are hostile.
    Returns the good (hash, address) pairs and the hashes whose row is refused."""
    clients = [c.key_hash for c in seed.result.clients]
    clients += [await add_assistants_only_client(url) for _ in range(4)]
    good = [(clients[0], "one@example.test"), (clients[1], "two@example.test"),
            (clients[2], "three@example.test"), (clients[9], "ten@example.test")]
    bad = {clients[3]: "(x@y.zz", clients[4]: "x@[y.zz", clients[5]: "a:b@c.de",
           clients[6]: "seven@example.test\r\nBcc: all@example.test", clients[7]: ""}
    lines = ["name,email,api_key_sha256", *(f"Good {n},{a},{h}" for n, (h, a) in enumerate(good))]
    lines += [f'Bad {n},"{a}",{h}' for n, (h, a) in enumerate(bad.items())]
    lines.append(f"Good again,two@example.test,{clients[1]}")  # a duplicate row
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return good, list(bad)


@pytest.mark.parametrize("mailer", ["smtp", "outbox"])
async def test_hostile_addresses_are_refused_and_every_good_client_is_mailed_once(
    mailer: str, phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path,
    smtp_server: SmtpServer,
) -> None:
    directory = tmp_path / "clients.csv"
    good, bad = await hostile_directory(sandbox_seed, phase2_target_url, directory)
    values: dict[str, Any] = {"client_directory": directory, "email_concurrency": 3}
    if mailer == "smtp":
        values.update(mailer="smtp", smtp_host=smtp_server.host, smtp_port=smtp_server.port)
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path, **values))
    plan = await EmailClientsStep().plan(ctx)
    assert plan.facts["recipients"] == 4
    assert [w.split(":")[0] for w in plan.warnings] == [
        "line 6", "line 7", "line 8", "line 9", "line 11",
        "… and 1 more refused directory rows (all in the step's output and in `rollback-bot "
        "check`)"]
    await rotate(ctx)
    lines: list[str] = []
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        outcome = await EmailClientsStep().run(ctx, lines.append)

    if mailer == "smtp":
        received = sorted(str(m["To"]) for m in smtp_server.messages)
    else:
        received = sorted(
            line.removeprefix("To: ") for eml in (tmp_path / "outbox").iterdir()
            for line in eml.read_text().splitlines() if line.startswith("To: "))
    assert received == sorted(address for _, address in good), "each good client once"
    assert outcome.facts["sent"] == 4 and outcome.facts["directory_refused"] == 6
    assert "6 directory rows refused" in outcome.summary
    mapping = await ctx.rotations.mapping(ctx.run_id)
    assert len(mapping) == 10 and set(bad) <= set(mapping)
    assert sorted(outcome.facts["no_contact"]) == sorted(
        h[:8] for h in mapping if h not in dict(good)), "the refused ones are reported"
    assert any(line.startswith("client directory: line 8: email 'a:b@c.de'") for line in lines)
    records = await ctx.notifications.records(ctx.run_id)
    assert not [h for h, r in records.items() if r.status is S.SENDING], "none left sending"


class LedgerThatBreaks(MemoryNotificationLedger):
    """The bot database going away mid-step: every write after the first `good` ones fails."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.left = good

    async def save(self, run_id: str, *records: NotificationRecord) -> None:
        if self.left <= 0:
            raise ConnectionResetError("the bot database closed the connection")
        self.left -= 1
        await super().save(run_id, *records)


async def test_a_ledger_that_cannot_be_written_fails_the_step_cleanly(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
) -> None:
    settings = sandbox_settings(phase2_target_url, tmp_path, email_concurrency=2,
                                **smtp_settings(smtp_server, sandbox_seed))
    ledger = LedgerThatBreaks(good=3)  # the no-contact mark, then two clients' `sending`
    ctx = StepContext(str(uuid.uuid4()), settings, MemoryRotationLedger(), ledger)
    await rotate(ctx)
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        with pytest.raises(StepError, match=r"^the notification ledger could not be written "
                                            r"\(ConnectionResetError: the bot database"):
            await EmailClientsStep().run(ctx, lambda _line: None)
    records = await ledger.records(ctx.run_id)
    marked = {r.email for r in records.values() if r.status is S.SENDING}
    received = [str(m["To"]) for m in smtp_server.messages]
    assert set(received) <= marked, "nobody is mailed without a `sending` mark first"
    assert len(received) == len(set(received)) <= 2


async def test_an_error_for_one_client_at_delivery_fails_that_client_alone(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path,
) -> None:
    """The outbox cannot write one client's file; the others are written, none left sending."""
    ctx = memory_context(sandbox_settings(phase2_target_url, tmp_path, email_concurrency=2,
                                          client_directory=sandbox_seed.directory_csv))
    await rotate(ctx)
    contacts = [c for c in sandbox_seed.result.clients if c.has_contact]
    blocked = contacts[2]
    (tmp_path / "outbox" / f"{ctx.run_id[:8]}-{blocked.key_hash[:12]}.eml").mkdir(parents=True)
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        with pytest.raises(StepError, match=r"^1 of 5 emails failed: "
                                            + blocked.key_hash[:8] + r": IsADirectoryError"):
            await EmailClientsStep().run(ctx, lambda _line: None)
    records = await ctx.notifications.records(ctx.run_id)
    assert records[blocked.key_hash].status is S.FAILED
    assert sorted(r.status for h, r in records.items() if h != blocked.key_hash
                  and h in {c.key_hash for c in contacts}) == [S.SENT] * 4
    assert not [h for h, r in records.items() if r.status is S.SENDING]
