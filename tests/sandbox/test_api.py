"""The sandbox api in-process: Phase 2 and Phase 3 code, each against both schemas, and its logs."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from bot.rehearsal.postgres import free_port
from sandbox.api import build_app
from sandbox.migrate import migrate
from sandbox.seed import sha256_hex
from tests.fixtures.sandbox import SandboxSeed
from tests.sandbox.helpers import fetch, get, give_key


@asynccontextmanager
async def running_api(database_url: str, phase: int) -> AsyncIterator[str]:
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = database_url
    runner = web.AppRunner(build_app(phase), access_log=None)
    try:
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        if previous is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = previous


def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]


async def test_phase3_code_at_head_serves_own_rows_and_logs_failures(
    target_db_url: str, sandbox_seed: SandboxSeed, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, bob = sandbox_seed.result.clients[:2]
    async with running_api(target_db_url, 3) as base:
        assert await get(f"{base}/health") == (200, {"status": "ok", "phase": 3})
        status, body = await get(f"{base}/api/v1/sessions", alice.key)
        assert status == 200 and (body["total"], body["page"], body["page_size"]) == (3, 1, 50)
        assert {s["id"] for s in body["sessions"]} == set(alice.session_ids)
        assert body["sessions"][0]["metadata"] == {"client": alice.name}
        for key in ("not-a-key", None):
            status, body = await get(f"{base}/api/v1/sessions", key)
            assert status == 401 and body["error"]["code"] == "AUTHENTICATION_ERROR"
        status, _ = await get(f"{base}/api/v1/sessions/{bob.session_ids[0]}", alice.key)
        assert status == 404  # someone else's session
    lines = log_lines(capsys)
    failed = [line for line in lines if line["event"] == "ownership_check_failed"]
    assert len(failed) == 2
    assert failed[0]["key_hash_prefix"] == sha256_hex("not-a-key")[:8]
    assert failed[1]["key_hash_prefix"] == alice.key_hash[:8]
    assert [line["status"] for line in lines if line["event"] == "request"] == [
        200, 200, 401, 401, 404]
    assert all("timestamp" in line for line in lines)
    text = json.dumps(lines)
    assert alice.key not in text and alice.key_hash not in text


async def test_each_code_phase_fails_against_the_other_schema(
    target_db_url: str, sandbox_seed: SandboxSeed, capsys: pytest.CaptureFixture[str]
) -> None:
    client = sandbox_seed.result.clients[0]
    async with running_api(target_db_url, 2) as base:
        status, body = await get(f"{base}/api/v1/sessions", client.key)
        assert status == 500 and body["error"]["code"] == "INTERNAL_ERROR"
    await migrate(target_db_url, "20260201_000006", down=True)
    async with running_api(target_db_url, 3) as base:
        assert (await get(f"{base}/api/v1/sessions", client.key))[0] == 500
    async with running_api(target_db_url, 2) as base:
        # The Phase 3 key still matches the kept hash; the rollback is what changes that.
        status, body = await get(f"{base}/api/v1/sessions", client.key)
        assert status == 200 and body["total"] == 3
    errors = [line for line in log_lines(capsys) if line["event"] == "database_error"]
    assert [e["error_class"] for e in errors] == ["UndefinedColumnError"] * 2


async def test_phase2_session_without_hash_logs_missing_hash(
    target_db_url: str, sandbox_seed: SandboxSeed, capsys: pytest.CaptureFixture[str]
) -> None:
    client = sandbox_seed.result.clients[0]
    first, second = client.session_ids[:2]
    await migrate(target_db_url, "20260201_000006", down=True)
    await fetch(target_db_url, "UPDATE sessions SET owner_api_key_hash = NULL WHERE id = $1",
                first)
    await give_key(target_db_url, second, "the-new-key")
    async with running_api(target_db_url, 2) as base:
        assert (await get(f"{base}/api/v1/sessions/{first}", "the-new-key"))[0] == 404
        status, body = await get(f"{base}/api/v1/sessions/{second}", "the-new-key")
        assert status == 200 and body["id"] == second
        status, body = await get(f"{base}/api/v1/sessions", "the-new-key")
        assert status == 200 and [s["id"] for s in body["sessions"]] == [second]
    events = [line["event"] for line in log_lines(capsys)]
    assert events.count("ownership_check_failed_missing_hash") == 1
    assert "ownership_check_failed" not in events
