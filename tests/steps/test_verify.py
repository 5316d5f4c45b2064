"""Step 6 against the sandbox api in a real container, after a downgrade and new keys by hand."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.domain.step_protocol import Outcome, StepError
from bot.domain.steps import StepName
from bot.settings import Settings
from bot.urls import libpq_url
from sandbox.migrate import migrate
from steps.http_probe import HttpAnswer, HttpProbe
from steps.key_probes import judge
from steps.restart import RestartStep
from steps.verify import VerifyStep
from tests.fixtures.sandbox import SandboxApi
from tests.steps.sandbox_settings import sandbox_settings
from tests.steps.step_context import step_context

pytestmark = pytest.mark.docker

CLIENTS = 6  # the sandbox seed


def api_settings(api: SandboxApi, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "api_base_url": api.base_url, "api_compose_project": api.project,
        "code_restore_command": "git checkout -q phase-2", "code_restore_workdir": api.code_dir,
        **overrides}
    return sandbox_settings(api.database_url, tmp_path, **values)


async def rekey_by_hand(url: str) -> dict[str, str]:
    """Downgrade, then one new key per client in owner_api_key and its hash in
    owner_api_key_hash (what steps 2 and 4 leave behind). Returns new hash -> key."""
    await migrate(url, "20260201_000006", down=True)
    conn = await asyncpg.connect(libpq_url(url))
    try:
        rows = await conn.fetch("SELECT DISTINCT owner_api_key_hash AS h FROM sessions UNION "
                                "SELECT owner_api_key_hash FROM assistants")
        keys = {r["h"]: str(uuid.uuid4()) for r in rows}
        for old_hash, key in keys.items():
            for table in ("sessions", "assistants"):
                await conn.execute(
                    f"UPDATE {table} SET owner_api_key = $1, owner_api_key_hash = $2 "
                    "WHERE owner_api_key_hash = $3",
                    key, hashlib.sha256(key.encode()).hexdigest(), old_hash)
        new = await conn.fetch("SELECT DISTINCT owner_api_key_hash AS h, owner_api_key AS k "
                               "FROM sessions")
        return {r["h"]: r["k"] for r in new}
    finally:
        await conn.close()


async def restart_to_phase2(settings: Settings) -> Mapping[str, Any]:
    outcome: Outcome = await RestartStep().run(step_context(settings), lambda _line: None)
    return outcome.facts


def assert_no_key(keys: Mapping[str, str], *texts: str) -> None:
    for text in texts:
        for key in keys.values():
            assert key not in text, "a client's key leaked"


async def test_new_keys_pass_random_key_refused_and_failures_counted_since_restart(
    sandbox_api: SandboxApi, tmp_path: Path
) -> None:
    keys = await rekey_by_hand(sandbox_api.database_url)
    settings = api_settings(sandbox_api, tmp_path)
    async with HttpProbe() as http:  # a failure logged BEFORE the restart
        answer = await http.get(f"{sandbox_api.base_url}/api/v1/sessions",
                                headers={"X-API-Key": "before-restart"})
        assert answer.status == 401
    restart_facts = await restart_to_phase2(settings)

    lines: list[str] = []
    ctx = step_context(settings, **{StepName.RESTART.value: restart_facts})
    outcome = await VerifyStep().run(ctx, lines.append)

    facts = outcome.facts
    assert facts["sampled"] == 5 and len(facts["passed"]) == 5 and facts["failed"] == []
    assert set(facts["passed"]) <= {h[:8] for h in keys}
    assert facts["bogus_key_status"] == 401
    assert facts["log_pattern_counts"] == {"ownership_check_failed": 1}, \
        "the random-key probe since the restart, not the failure before it"
    assert facts["logs_since"] == restart_facts["restarted_at"]
    assert facts["containers"] == [f"{sandbox_api.project}-api-1"]
    assert outcome.summary == "5/5 new keys work; random key refused (401)"
    assert sum("200 with only its own sessions" in line for line in lines) == 5
    assert_no_key(keys, *lines, json.dumps(facts), outcome.summary)


async def test_whole_population_sampled_when_the_sample_is_larger(
    sandbox_api: SandboxApi, tmp_path: Path
) -> None:
    keys = await rekey_by_hand(sandbox_api.database_url)
    settings = api_settings(sandbox_api, tmp_path, verify_sample_size=50)
    await restart_to_phase2(settings)
    outcome = await VerifyStep().run(step_context(settings), lambda _line: None)
    assert outcome.facts["sampled"] == CLIENTS
    assert sorted(outcome.facts["passed"]) == sorted(h[:8] for h in keys)
    assert outcome.facts["log_pattern_counts"]["ownership_check_failed"] >= 1


async def test_verify_fails_clearly_when_the_api_still_runs_phase3_code(
    sandbox_api: SandboxApi, tmp_path: Path
) -> None:
    keys = await rekey_by_hand(sandbox_api.database_url)  # no restart: Phase 3 code, 500s
    settings = api_settings(sandbox_api, tmp_path)
    lines: list[str] = []
    with pytest.raises(StepError, match=r"verification failed: 5 of 5 new keys did not work "
                                        r"\([0-9a-f]{8}(, [0-9a-f]{8}){4}\)") as failure:
        await VerifyStep().run(step_context(settings), lines.append)
    assert sum("FAILED, answered 500" in line for line in lines) == 5
    assert not [line for line in lines if "answered 500:" in line], "no body copied"
    assert_no_key(keys, *lines, str(failure.value))


async def test_one_broken_key_is_named_by_its_hash_prefix(
    sandbox_api: SandboxApi, tmp_path: Path
) -> None:
    keys = await rekey_by_hand(sandbox_api.database_url)
    broken_hash = sorted(keys)[0]
    conn = await asyncpg.connect(libpq_url(sandbox_api.database_url))
    try:  # the stored key no longer matches the hash the api filters by
        await conn.execute("UPDATE sessions SET owner_api_key = $1 WHERE owner_api_key_hash = $2",
                           str(uuid.uuid4()), broken_hash)
        await conn.execute("UPDATE assistants SET owner_api_key = NULL "
                           "WHERE owner_api_key_hash = $1", broken_hash)
    finally:
        await conn.close()
    settings = api_settings(sandbox_api, tmp_path, verify_sample_size=50)
    await restart_to_phase2(settings)
    lines: list[str] = []
    with pytest.raises(StepError, match=rf"1 of {CLIENTS} new keys did not work "
                                        rf"\({broken_hash[:8]}\)$"):
        await VerifyStep().run(step_context(settings), lines.append)
    (line,) = [line for line in lines if broken_hash[:8] in line]
    assert "answered 401" in line and "does not match its stored hash" in line
    assert_no_key(keys, *lines)


async def test_no_new_keys_at_all_is_a_failure(sandbox_api: SandboxApi, tmp_path: Path) -> None:
    await migrate(sandbox_api.database_url, "20260201_000006", down=True)  # keys all NULL
    settings = api_settings(sandbox_api, tmp_path)
    with pytest.raises(StepError, match="no client has a new key to try"):
        await VerifyStep().run(step_context(settings), lambda _line: None)


async def test_check_never_claims_done(sandbox_api: SandboxApi, tmp_path: Path) -> None:
    check = await VerifyStep().check(step_context(api_settings(sandbox_api, tmp_path)))
    assert not check.done and "always runs" in check.reason


OWN = {"a", "b", "c"}


@pytest.mark.parametrize(("answer", "problem"), [
    (HttpAnswer(200, {"sessions": [{"id": "a"}, {"id": "b"}], "total": 3}), None),
    (HttpAnswer(200, {"sessions": [{"id": "a"}]}), None),  # one page of several
    (HttpAnswer(200, {"sessions": [{"id": "a"}, {"id": "x"}], "total": 3}),
     "answered 200 with 1 sessions of other clients"),
    (HttpAnswer(200, {"sessions": [], "total": 0}),
     "answered 200 with total 0, but the client owns 3 sessions"),
    (HttpAnswer(200, {"sessions": []}), "answered 200 with none of its 3 sessions"),
    (HttpAnswer(200, "<html>"), "answered 200 without a `sessions` list"),
    (HttpAnswer(401, {"error": {"code": "AUTHENTICATION_ERROR", "message": "key abc wrong"}}),
     "answered 401 (AUTHENTICATION_ERROR)"),
    (HttpAnswer(403, {"detail": "key abc is not yours"}), "answered 403"),
    (HttpAnswer(500, {"error": "boom for key abc"}), "answered 500"),  # free text: not copied
    (HttpAnswer(500, "Traceback: key abc"), "answered 500"),
    (HttpAnswer(None, error="ClientConnectorError: refused"),
     "no answer (ClientConnectorError: refused)"),
])
def test_judging_one_clients_answer(answer: HttpAnswer, problem: str | None) -> None:
    assert judge(answer, OWN) == problem


async def test_an_answer_to_a_real_key_is_shown_by_status_and_code_never_its_body(
    target_db_url: str, tmp_path: Path
) -> None:
    """An api that echoes the key and other clients' rows in its error bodies (real HTTP)."""
    from aiohttp import web

    from tests.fixtures.http import serving

    keys = await rekey_by_hand(target_db_url)

    async def sessions(request: web.Request) -> web.Response:
        key = request.headers.get("X-API-Key", "")
        if key in keys.values():
            return web.json_response({"error": {"code": "INTERNAL_ERROR", "message":
                                      f"cannot load sessions for {key}: row secret-row-1"}},
                                     status=500)
        return web.json_response({"error": {"code": "AUTHENTICATION_ERROR",
                                            "message": f"unknown key {key}"}}, status=401)

    app = web.Application()
    app.router.add_get("/api/v1/sessions", sessions)
    async with serving(app) as base_url:
        settings = sandbox_settings(target_db_url, tmp_path, restart_strategy="command",
                                    api_base_url=base_url)
        lines: list[str] = []
        with pytest.raises(StepError, match="5 of 5 new keys did not work") as failure:
            await VerifyStep().run(step_context(settings), lines.append)
    assert sum("FAILED, answered 500 (INTERNAL_ERROR)" in line for line in lines) == 5
    assert "random key: answered 401 (AUTHENTICATION_ERROR)" in lines
    everything = "\n".join([*lines, str(failure.value)])
    assert "secret-row-1" not in everything and "cannot load sessions" not in everything
    assert_no_key(keys, everything)
