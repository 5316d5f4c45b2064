"""Step 5's canary: nobody is mailed until a sample of the new keys opens the api and a random
key is refused. Real HTTP (the sandbox api's code, served in this process), real SMTP."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from bot.domain.step_protocol import StepContext, StepError
from bot.urls import libpq_url
from sandbox.api import build_app
from steps.email_clients import EmailClientsStep
from steps.rotate_keys import RotateKeysStep
from tests.fixtures.http import serving
from tests.fixtures.sandbox import SandboxSeed
from tests.fixtures.smtp import SmtpServer
from tests.steps.conftest import memory_context, owned_rows
from tests.steps.sandbox_settings import sandbox_settings

CONTACTS = 5  # of the seed's 6 clients


def mail_settings(url: str, tmp_path: Path, server: SmtpServer, seed: SandboxSeed,
                  api_base_url: str, **overrides: Any) -> dict[str, Any]:
    return {"target_database_url": url, "tmp_path": tmp_path, "mailer": "smtp",
            "smtp_host": server.host, "smtp_port": server.port,
            "client_directory": seed.directory_csv, "mail_from": "oncall@example.test",
            "api_base_url": api_base_url, **overrides}


def context(values: dict[str, Any]) -> StepContext:
    values = dict(values)
    return memory_context(sandbox_settings(values.pop("target_database_url"),
                                           values.pop("tmp_path"), **values))


async def rotated(values: dict[str, Any]) -> StepContext:
    ctx = context(values)
    await RotateKeysStep().run(ctx, lambda _line: None)
    return ctx


async def new_keys(url: str) -> set[str]:
    return {key for _, key in (await owned_rows(url)).values() if key}


def bot_logs(caplog: pytest.LogCaptureFixture) -> str:
    """Every log record but the recipient's mail server's (it holds the mails it received)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name != "mail.log")


def assert_no_key(keys: set[str], *texts: str) -> None:
    assert keys
    for text in texts:
        assert not [key for key in keys if key in text], "a new key leaked"


async def test_a_canary_that_passes_lets_every_client_be_mailed(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
    sandbox_api_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ctx = await rotated(mail_settings(phase2_target_url, tmp_path, smtp_server, sandbox_seed,
                                      sandbox_api_url, verify_sample_size=3))
    step = EmailClientsStep()
    plan = await step.plan(ctx)
    assert plan.details[-1] == (
        f"before any email, a canary: GET {sandbox_api_url}/api/v1/sessions with 3 of the new "
        "keys to be mailed (each must answer 200 with only its own sessions) and a random "
        "never-issued key (must be refused, 401/403); if either fails nobody is mailed")

    lines: list[str] = []
    outcome = await step.run(ctx, lines.append)

    assert outcome.facts["sent"] == CONTACTS and len(smtp_server.messages) == CONTACTS
    assert outcome.facts["canary"] == {"sampled": 3, "of": CONTACTS, "random_key_status": 401}
    assert "canary: random key: answered 401 (AUTHENTICATION_ERROR)" in lines
    assert sum(bool(re.fullmatch(r"canary: client [0-9a-f]{8}: 200 with only its own "
                                 r"sessions \(3 owned\)", line)) for line in lines) == 3
    canary_at = next(i for i, line in enumerate(lines) if line.startswith("canary passed: 3 "
                                                                           "of 5 new keys"))
    assert canary_at < next(i for i, line in enumerate(lines) if "emails to send" in line)
    keys = await new_keys(phase2_target_url)
    assert_no_key(keys, *lines, repr(dict(outcome.facts)), outcome.summary, bot_logs(caplog))


async def test_an_api_still_on_phase3_code_gets_nobody_mailed_also_on_retry(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
    sandbox_api_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """Step 3 did not take: the api runs the Phase 3 code against the Phase 2 schema, and
    answers every real key with a 500 (its error body is never copied)."""
    caplog.set_level(logging.DEBUG)
    async with serving(build_app(phase=3, database_url=phase2_target_url)) as phase3_url:
        values = mail_settings(phase2_target_url, tmp_path, smtp_server, sandbox_seed,
                               phase3_url)
        ctx = await rotated(values)
        failures: list[str] = []
        lines: list[str] = []
        for _attempt in ("first", "retry"):
            with pytest.raises(StepError) as failure:
                await EmailClientsStep().run(ctx, lines.append)
            failures.append(str(failure.value))
            assert smtp_server.messages == [], "nobody is mailed"
            assert await ctx.notifications.records(ctx.run_id) == {}, "no ledger write"
    assert failures[0] == failures[1]
    assert re.fullmatch(
        rf"canary failed at {phase3_url}/api/v1/sessions, nobody was mailed: 5 of 5 sampled "
        r"new keys failed \([0-9a-f]{8}: answered 500 \(INTERNAL_ERROR\)(; [0-9a-f]{8}: "
        r"answered 500 \(INTERNAL_ERROR\)){4}\)\. Retry probes again before mailing anyone\.",
        failures[0]), failures[0]
    assert "canary: random key: answered 401 (AUTHENTICATION_ERROR)" in lines
    assert not [line for line in lines if "database error" in line], "no body copied"

    restarted = StepContext(ctx.run_id, sandbox_settings(
        phase2_target_url, tmp_path, **{k: v for k, v in values.items()
                                        if k not in ("target_database_url", "tmp_path",
                                                     "api_base_url")},
        api_base_url=sandbox_api_url), ctx.rotations, ctx.notifications)
    outcome = await EmailClientsStep().run(restarted, lines.append)  # Retry, on Phase 2 code
    assert outcome.facts["sent_now"] == CONTACTS and len(smtp_server.messages) == CONTACTS
    keys = await new_keys(phase2_target_url)
    assert_no_key(keys, *lines, *failures, bot_logs(caplog))


async def _change_key(url: str, new_hash: str, *, one_row: bool) -> None:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        if one_row:  # one session row of the client carries another key than the rest
            await conn.execute(
                "UPDATE sessions SET owner_api_key = $1 WHERE id = (SELECT id FROM sessions "
                "WHERE owner_api_key_hash = $2 ORDER BY id LIMIT 1)", str(uuid.uuid4()),
                new_hash)
        else:  # every row: the key no longer matches the hash the api filters by
            wrong = str(uuid.uuid4())
            for table in ("sessions", "assistants"):
                await conn.execute(f"UPDATE {table} SET owner_api_key = $1 "
                                   "WHERE owner_api_key_hash = $2", wrong, new_hash)
    finally:
        await conn.close()


@pytest.mark.parametrize(("one_row", "why"), [
    (True, "its rows hold 2 different keys"),
    (False, "answered 401 (AUTHENTICATION_ERROR) (its stored key does not match its stored "
            "hash)"),
])
async def test_a_key_changed_on_the_target_gets_nobody_mailed(
    one_row: bool, why: str, phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path,
    smtp_server: SmtpServer, sandbox_api_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ctx = await rotated(mail_settings(phase2_target_url, tmp_path, smtp_server, sandbox_seed,
                                      sandbox_api_url, verify_sample_size=50))
    client = next(c for c in sandbox_seed.result.clients if c.has_contact)
    new_hash = (await ctx.rotations.mapping(ctx.run_id))[client.key_hash]
    await _change_key(phase2_target_url, new_hash, one_row=one_row)
    lines: list[str] = []
    with pytest.raises(StepError) as failure:
        await EmailClientsStep().run(ctx, lines.append)
    assert str(failure.value) == (
        f"canary failed at {sandbox_api_url}/api/v1/sessions, nobody was mailed: 1 of 5 "
        f"sampled new keys failed ({new_hash[:8]}: {why}). Retry probes again before mailing "
        "anyone.")
    assert smtp_server.messages == []
    assert f"canary: client {new_hash[:8]}: FAILED, {why}" in lines
    keys = await new_keys(phase2_target_url)
    assert_no_key(keys, *lines, str(failure.value), bot_logs(caplog))


async def test_an_api_that_lets_any_key_in_gets_nobody_mailed(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path, smtp_server: SmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An api that checks no key (auth switched off): it lists each key's own rows, so the
    real keys look right, but it answers a never-issued key with 200 too."""
    caplog.set_level(logging.DEBUG)
    pool = await asyncpg.create_pool(libpq_url(phase2_target_url), min_size=1, max_size=2)

    async def sessions(request: web.Request) -> web.Response:
        key_hash = hashlib.sha256(request.headers.get("X-API-Key", "").encode()).hexdigest()
        ids = [r["id"] for r in await pool.fetch(
            "SELECT id::text AS id FROM sessions WHERE owner_api_key_hash = $1", key_hash)]
        return web.json_response({"sessions": [{"id": i} for i in ids], "total": len(ids),
                                  "page": 1, "page_size": 50})

    app = web.Application()
    app.router.add_get("/api/v1/sessions", sessions)
    try:
        async with serving(app) as open_url:
            ctx = await rotated(mail_settings(phase2_target_url, tmp_path, smtp_server,
                                              sandbox_seed, open_url))
            lines: list[str] = []
            with pytest.raises(StepError) as failure:
                await EmailClientsStep().run(ctx, lines.append)
    finally:
        await pool.close()
    assert str(failure.value) == (
        f"canary failed at {open_url}/api/v1/sessions, nobody was mailed: a random "
        "never-issued key answered 200, not 401/403, so the api's 200s prove nothing about "
        "the new keys. Retry probes again before mailing anyone.")
    assert "canary: random key: answered 200" in lines
    assert sum("200 with only its own sessions" in line for line in lines) == 5
    assert smtp_server.messages == []
    keys = await new_keys(phase2_target_url)
    assert_no_key(keys, *lines, str(failure.value), bot_logs(caplog))
