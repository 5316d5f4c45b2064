"""Steps 4 and 5 on the sandbox after the downgrade, with a real SMTP server."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import asyncpg
import pytest

from bot.domain.ledgers import NotificationStatus
from bot.domain.memory_ledgers import MemoryRotationLedger
from bot.domain.step_protocol import StepContext, StepError
from bot.urls import libpq_url
from sandbox.migrate import migrate
from steps.email_clients import EmailClientsStep
from steps.rotate_keys import RotateKeysStep
from tests.fixtures.sandbox import SandboxSeed
from tests.fixtures.smtp import SmtpServer
from tests.steps.sandbox_settings import sandbox_settings
from tests.steps.step_context import step_context

pytestmark = pytest.mark.usefixtures("phase2_api")  # the canary tries keys on it


@pytest.fixture
async def phase2_target(target_db_url: str) -> str:
    await migrate(target_db_url, "20260201_000006", down=True)
    return target_db_url


async def keys_by_client(url: str, seed: SandboxSeed, ledger: dict[str, str]
                         ) -> dict[str, set[str]]:
    """For each seeded client: the set of keys found on its rows (both tables)."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        found: dict[str, set[str]] = {}
        for client in seed.result.clients:
            ids = client.session_ids
            rows = await conn.fetch(
                "SELECT owner_api_key, owner_api_key_hash FROM sessions WHERE id = ANY($1::uuid[])"
                " UNION ALL SELECT owner_api_key, owner_api_key_hash FROM assistants"
                " WHERE id = ANY($2)", ids, client.assistant_ids)
            for row in rows:
                assert hashlib.sha256(row[0].encode()).hexdigest() == row[1]
                assert ledger[client.key_hash] == row[1]
            found[client.key_hash] = {r[0] for r in rows}
        return found
    finally:
        await conn.close()


class FailingLedger(MemoryRotationLedger):
    """The bot database is gone when the step records the new keys' hashes."""

    async def record(self, run_id: str, old_to_new: dict[str, str]) -> None:  # type: ignore[override]
        raise ConnectionError("bot database went away")


async def test_one_key_per_client_and_resume_when_the_ledger_failed(
    phase2_target: str, sandbox_seed: SandboxSeed, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = sandbox_settings(phase2_target, tmp_path, rotation_batch_pages=1)
    ctx = step_context(settings)
    crashing = StepContext(ctx.run_id, settings, FailingLedger(), ctx.notifications)
    step = RotateKeysStep()
    plan = await step.plan(ctx)
    assert plan.summary == "6 clients: 18 sessions, 6 assistants"
    assert not (await step.check(ctx)).done
    with pytest.raises(ConnectionError):
        await step.run(crashing, lambda _l: None)
    # The keys wait in the target's work table; the ledger knows none; no row was touched.
    assert not await crashing.rotations.mapping(ctx.run_id)
    assert not (await step.check(ctx)).done
    ledger = MemoryRotationLedger()
    resumed = StepContext(ctx.run_id, settings, ledger, ctx.notifications)
    lines: list[str] = []
    outcome = await step.run(resumed, lines.append)
    assert outcome.facts["clients_rotated"] == 6
    mapping = await ledger.mapping(ctx.run_id)
    assert len(mapping) == 6
    keys = await keys_by_client(phase2_target, sandbox_seed, mapping)
    assert all(len(client_keys) == 1 for client_keys in keys.values()), keys
    assert len({next(iter(k)) for k in keys.values()}) == 6
    assert (await step.check(resumed)).done
    captured = " ".join(lines) + caplog.text
    assert not any(next(iter(k)) in captured for k in keys.values())


async def rotated(target: str, tmp_path: Path, **overrides: object) -> StepContext:
    settings = sandbox_settings(target, tmp_path, **overrides)
    ctx = step_context(settings)
    await RotateKeysStep().run(ctx, lambda _l: None)
    return ctx


async def test_each_client_with_a_contact_gets_exactly_one_email_with_its_key(
    phase2_target: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
) -> None:
    ctx = await rotated(phase2_target, tmp_path, mailer="smtp", smtp_host=smtp_server.host,
                        smtp_port=smtp_server.port, client_directory=sandbox_seed.directory_csv,
                        mail_from="oncall@example.test")
    step = EmailClientsStep()
    plan = await step.plan(ctx)
    assert plan.facts["recipients"] == 5 and plan.facts["without_contact"] == 1
    assert any("xxxxxxxx-xxxx" in line for line in plan.details)
    lines: list[str] = []
    outcome = await step.run(ctx, lines.append)
    assert outcome.facts["sent"] == 5 and len(outcome.facts["no_contact"]) == 1
    mapping = await ctx.rotations.mapping(ctx.run_id)
    keys = await keys_by_client(phase2_target, sandbox_seed, mapping)
    for client in sandbox_seed.result.clients:
        received = smtp_server.to(client.email)
        assert len(received) == (1 if client.has_contact else 0)
        if received:
            assert received[0]["Subject"] == "URGENT: API Key Rotation Required"
            assert next(iter(keys[client.key_hash])) in received[0].get_content()
    assert (await step.check(ctx)).done
    await step.run(ctx, lines.append)  # a second run sends nothing
    assert len(smtp_server.messages) == 5
    assert not any(next(iter(k)) in " ".join(lines) for k in keys.values())


async def test_rejected_recipient_is_reported_and_only_it_is_retried(
    phase2_target: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
) -> None:
    contacts = [c for c in sandbox_seed.result.clients if c.has_contact]
    smtp_server.fail_permanent(contacts[0].email)
    smtp_server.fail_transient(contacts[1].email, times=2)
    ctx = await rotated(phase2_target, tmp_path, mailer="smtp", smtp_host=smtp_server.host,
                        smtp_port=smtp_server.port, client_directory=sandbox_seed.directory_csv)
    with pytest.raises(StepError, match="1 of 5 emails failed"):
        await EmailClientsStep().run(ctx, lambda _l: None)
    records = await ctx.notifications.records(ctx.run_id)
    assert records[contacts[0].key_hash].status is NotificationStatus.FAILED
    assert records[contacts[1].key_hash].status is NotificationStatus.SENT
    assert records[contacts[1].key_hash].attempts == 3
    assert len(smtp_server.messages) == 4
    smtp_server.handler.permanent.clear()  # the mailbox is fixed; Retry
    outcome = await EmailClientsStep().run(ctx, lambda _l: None)
    assert outcome.facts["sent"] == 5
    assert [len(smtp_server.to(c.email)) for c in contacts] == [1, 1, 1, 1, 1]


async def test_outbox_mailer_writes_one_eml_per_client(
    phase2_target: str, sandbox_seed: SandboxSeed, tmp_path: Path,
) -> None:
    ctx = await rotated(phase2_target, tmp_path, client_directory=sandbox_seed.directory_csv)
    await EmailClientsStep().run(ctx, lambda _l: None)
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 5 and not list((tmp_path / "outbox").glob("*.partial"))
