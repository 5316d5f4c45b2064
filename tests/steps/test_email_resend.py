"""Step 5 marks a client `sending` as late as it can, and resends to the unconfirmed ones.

Real PostgreSQL ledger, real SMTP (aiosmtpd) holding chosen recipients before RCPT TO is
answered or after DATA, and the step cancelled while they are held: what a crash leaves.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.ledgers import NotificationRecord, NotificationStatus
from bot.domain.memory_ledgers import MemoryNotificationLedger, MemoryRotationLedger
from bot.domain.resend import unconfirmed
from bot.domain.step_protocol import StepContext, StepError
from steps.email_clients import EmailClientsStep
from steps.rotate_keys import RotateKeysStep
from tests.fixtures.sandbox import SandboxSeed
from tests.fixtures.smtp import SmtpServer
from tests.steps.conftest import sql_context
from tests.steps.sandbox_settings import sandbox_settings
from tests.steps.test_email_clients import smtp_settings

pytestmark = pytest.mark.usefixtures("phase2_api")  # the canary tries keys on it

S = NotificationStatus


async def statuses(ctx: StepContext) -> dict[str, NotificationStatus]:
    return {h: r.status for h, r in (await ctx.notifications.records(ctx.run_id)).items()}


async def until(predicate: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    """Poll an async predicate with a deadline."""
    async with asyncio.timeout(within):
        while True:
            if await predicate():
                return
            await asyncio.sleep(0.05)


async def test_only_a_client_past_rcpt_to_is_left_uncertain_and_resend_sends_it_once(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
    bot_sessionmaker: async_sessionmaker[AsyncSession], sql_run_id: str,
) -> None:
    settings = sandbox_settings(phase2_target_url, tmp_path, email_concurrency=5,
                                **smtp_settings(smtp_server, sandbox_seed))
    ctx = sql_context(settings, bot_sessionmaker, sql_run_id)
    await RotateKeysStep().run(ctx, lambda _line: None)
    contacts = [c for c in sandbox_seed.result.clients if c.has_contact]
    past_rcpt, before_rcpt = contacts[1], contacts[2]
    smtp_server.stall(past_rcpt.email)
    smtp_server.stall_rcpt(before_rcpt.email)
    step = asyncio.create_task(EmailClientsStep().run(ctx, lambda _line: None))

    async def held() -> bool:
        return (smtp_server.handler.stalling == {past_rcpt.email}
                and smtp_server.handler.stalling_rcpt == {before_rcpt.email}
                and len(smtp_server.messages) == 3)

    await until(held)
    ledger = await statuses(ctx)
    assert ledger[past_rcpt.key_hash] is S.SENDING, "marked before DATA, durably"
    assert before_rcpt.key_hash not in ledger, "not marked while RCPT TO is unanswered"
    step.cancel()  # the bot dies here
    with pytest.raises(asyncio.CancelledError):
        await step
    smtp_server.unstall()

    outcome = await EmailClientsStep().run(ctx, lambda _line: None)  # the Retry
    assert outcome.facts["uncertain"] == [past_rcpt.key_hash[:8]]
    assert len(smtp_server.to(before_rcpt.email)) == 1, "never handed over: sent by the Retry"
    assert smtp_server.to(past_rcpt.email) == []
    records = await ctx.notifications.records(ctx.run_id)
    assert unconfirmed(records) == [past_rcpt.key_hash]

    lines: list[str] = []
    resent = await EmailClientsStep().resend(ctx, lines.append, [past_rcpt.key_hash])
    assert resent.facts["resent"] == [past_rcpt.key_hash[:8]]
    assert len(smtp_server.to(past_rcpt.email)) == 1
    assert all(len(smtp_server.to(c.email)) == 1 for c in contacts), "nobody else again"
    assert unconfirmed(await ctx.notifications.records(ctx.run_id)) == []
    again = await EmailClientsStep().resend(ctx, lines.append, [past_rcpt.key_hash])
    assert again.facts["resent"] == [] and len(smtp_server.to(past_rcpt.email)) == 1


class HistoryLedger(MemoryNotificationLedger):
    """A memory ledger that keeps every status it was told, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[str, NotificationStatus]] = []

    async def save(self, run_id: str, *records: NotificationRecord) -> None:
        self.history += [(r.client_hash, r.status) for r in records]
        await super().save(run_id, *records)


async def test_a_refused_recipient_is_never_marked_sending(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
) -> None:
    """550 at RCPT TO: nothing was handed over, so the client is failed, never uncertain."""
    contacts = [c for c in sandbox_seed.result.clients if c.has_contact]
    smtp_server.fail_permanent(contacts[0].email)
    ledger = HistoryLedger()
    settings = sandbox_settings(phase2_target_url, tmp_path,
                                **smtp_settings(smtp_server, sandbox_seed))
    ctx = StepContext(str(uuid.uuid4()), settings, MemoryRotationLedger(), ledger)
    await RotateKeysStep().run(ctx, lambda _line: None)
    with pytest.raises(StepError, match="1 of 5 emails failed"):
        await EmailClientsStep().run(ctx, lambda _line: None)
    refused = [status for h, status in ledger.history if h == contacts[0].key_hash]
    assert refused == [S.FAILED]
    others = [status for h, status in ledger.history if h == contacts[1].key_hash]
    assert others[0] is S.SENDING and others[-1] is S.SENT


async def test_a_run_continuing_a_rotation_resends_from_the_rotations_ledgers(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
) -> None:
    """Both ledgers are keyed by the rotation, which an earlier run began: the resend reads
    the keys and the unconfirmed clients there, not under the run's own id."""
    settings = sandbox_settings(phase2_target_url, tmp_path,
                                **smtp_settings(smtp_server, sandbox_seed))
    ledger = MemoryNotificationLedger()
    ctx = StepContext(str(uuid.uuid4()), settings, MemoryRotationLedger(), ledger,
                      rotation_id=str(uuid.uuid4()))
    await RotateKeysStep().run(ctx, lambda _line: None)
    await EmailClientsStep().run(ctx, lambda _line: None)
    client = next(c for c in sandbox_seed.result.clients if c.has_contact)
    records = await ledger.records(ctx.rotation_id)
    assert records[client.key_hash].status is S.SENT and len(smtp_server.to(client.email)) == 1
    # As the bot dying during its DATA would have left it:
    await ledger.save(ctx.rotation_id, replace(records[client.key_hash], status=S.SENDING))
    resent = await EmailClientsStep().resend(ctx, lambda _line: None, [client.key_hash])
    assert resent.facts["resent"] == [client.key_hash[:8]]
    assert len(smtp_server.to(client.email)) == 2, "its key, once more"
    assert unconfirmed(await ledger.records(ctx.rotation_id)) == []
    assert await ledger.records(ctx.run_id) == {}, "nothing written under the run's own id"
