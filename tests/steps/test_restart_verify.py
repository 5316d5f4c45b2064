"""Steps 3 and 6 against the sandbox api in a real container."""

from __future__ import annotations

from pathlib import Path

import aiodocker
import asyncpg
import pytest

from bot.db.urls import libpq_url
from bot.domain.steps import StepName
from bot.settings import Settings
from sandbox.migrate import migrate
from steps.protocol import StepError
from steps.restart import RestartStep
from steps.verify import VerifyStep
from tests.fixtures.sandbox import SandboxApi, SandboxSeed
from tests.steps.sandbox_settings import sandbox_settings
from tests.steps.step_context import step_context

pytestmark = pytest.mark.docker


def api_settings(api: SandboxApi, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "api_base_url": api.base_url, "api_compose_project": api.project,
        "code_restore_command": "git checkout -q phase-2", "code_restore_workdir": api.code_dir,
        **overrides}
    return sandbox_settings(api.database_url, tmp_path, **values)


async def rotate_by_hand(url: str) -> dict[str, str]:
    """Phase 2 schema with one new key per client (what steps 2 and 4 leave behind)."""
    await migrate(url, "20260201_000006", down=True)
    conn = await asyncpg.connect(libpq_url(url))
    try:
        rows = await conn.fetch(
            "WITH k AS (SELECT h, gen_random_uuid()::text AS key FROM (SELECT DISTINCT "
            "owner_api_key_hash AS h FROM sessions UNION SELECT owner_api_key_hash FROM "
            "assistants) o), s AS (UPDATE sessions SET owner_api_key = k.key, owner_api_key_hash"
            " = encode(sha256(k.key::bytea), 'hex') FROM k WHERE owner_api_key_hash = k.h), "
            "a AS (UPDATE assistants SET owner_api_key = k.key, owner_api_key_hash = "
            "encode(sha256(k.key::bytea), 'hex') FROM k WHERE owner_api_key_hash = k.h) "
            "SELECT h, key FROM k")
        return {r["h"]: r["key"] for r in rows}
    finally:
        await conn.close()


async def test_restart_restores_code_and_verify_passes(
    sandbox_api: SandboxApi, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    keys = await rotate_by_hand(sandbox_api.database_url)
    settings = api_settings(sandbox_api, tmp_path)
    restart = RestartStep()
    plan = await restart.plan(step_context(settings))
    assert plan.facts["containers"] == [f"{sandbox_api.project}-api-1"] and not plan.warnings
    assert not (await restart.check(step_context(settings))).done
    before = (await docker.containers.get(sandbox_api.container_id))["State"]["StartedAt"]
    outcome = await restart.run(step_context(settings), lambda _l: None)
    after = (await docker.containers.get(sandbox_api.container_id))["State"]["StartedAt"]
    assert after > before
    assert outcome.facts["containers"][0]["started_after"] == after
    assert (await restart.check(step_context(settings))).done

    lines: list[str] = []
    ctx = step_context(settings, **{StepName.RESTART.value: outcome.facts})
    verified = await VerifyStep().run(ctx, lines.append)
    assert verified.facts["sampled"] == 5 and verified.facts["failed"] == []
    assert verified.facts["bogus_key_status"] == 401
    assert verified.facts["log_pattern_counts"]["ownership_check_failed"] >= 1
    assert not any(key in line for key in keys.values() for line in lines)


async def test_verify_fails_clearly_when_keys_do_not_work(
    sandbox_api: SandboxApi, tmp_path: Path
) -> None:
    await rotate_by_hand(sandbox_api.database_url)  # but the api still runs Phase 3 code
    settings = api_settings(sandbox_api, tmp_path)
    with pytest.raises(StepError, match="new keys did not work"):
        await VerifyStep().run(step_context(settings), lambda _l: None)


async def test_no_matching_container_names_the_labels(
    sandbox_api: SandboxApi, tmp_path: Path
) -> None:
    settings = api_settings(sandbox_api, tmp_path, api_compose_project="nobody-here")
    plan = await RestartStep().plan(step_context(settings))
    assert "com.docker.compose.project=nobody-here" in plan.warnings[0]
    with pytest.raises(StepError, match=r"no api container matches labels "
                                        r"com\.docker\.compose\.service=api"):
        await RestartStep().run(step_context(settings), lambda _l: None)


async def test_restart_that_never_gets_healthy_fails_with_the_state(
    sandbox_api: SandboxApi, tmp_path: Path
) -> None:
    settings = api_settings(sandbox_api, tmp_path, api_health_path="/no-such-health",
                            health_timeout_seconds=2, code_restore_command="")
    lines: list[str] = []
    with pytest.raises(StepError, match=r"not healthy after 2 s: /no-such-health answered 404"):
        await RestartStep().run(step_context(settings), lines.append)
    assert any('"event": "startup"' in line for line in lines), "its last log lines are shown"


async def test_restart_strategy_command(sandbox_seed: SandboxSeed, tmp_path: Path,
                                        sandbox_api: SandboxApi) -> None:
    marker = tmp_path / "restarted"
    settings = api_settings(sandbox_api, tmp_path, restart_strategy="command",
                            restart_command=f"touch {marker}", code_restore_command="")
    outcome = await RestartStep().run(step_context(settings), lambda _l: None)
    assert marker.exists() and outcome.summary == "api restarted by command"


async def test_unreachable_docker_engine_is_named(
    target_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    settings = sandbox_settings(target_db_url, tmp_path, code_restore_command="")
    with pytest.raises(StepError, match="cannot reach the Docker engine"):
        await RestartStep().run(step_context(settings), lambda _l: None)
