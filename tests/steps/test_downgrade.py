"""Step 2 against the sandbox's own Alembic chain, run the way the real service runs it."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from bot.domain.step_protocol import StepError
from bot.urls import libpq_url
from steps.downgrade import DowngradeStep
from tests.steps.sandbox_settings import sandbox_settings
from tests.steps.step_context import step_context


async def test_downgrade_from_head_then_already_done(target_db_url: str, tmp_path: Path) -> None:
    ctx = step_context(sandbox_settings(target_db_url, tmp_path))
    step = DowngradeStep()
    plan = await step.plan(ctx)
    assert plan.summary == "undo 3 revisions: 9ddfdd63af30, 0c6d1a600bb1, 20260208_000007"
    assert not (await step.check(ctx)).done
    lines: list[str] = []
    outcome = await step.run(ctx, lines.append)
    assert outcome.facts["revision_before"] == "9ddfdd63af30"
    assert outcome.facts["revision_after"] == "20260201_000006"
    assert any("Running downgrade 20260208_000007 -> 20260201_000006" in line for line in lines)
    conn = await asyncpg.connect(libpq_url(target_db_url))
    try:
        nulls = await conn.fetchval("SELECT count(*) FROM sessions WHERE owner_api_key IS NULL")
        assert nulls == await conn.fetchval("SELECT count(*) FROM sessions") > 0
    finally:
        await conn.close()
    assert (await step.check(ctx)).done
    assert (await step.plan(ctx)).summary.startswith("already at 20260201_000006")
    with pytest.raises(StepError, match="found revision 20260201_000006"):
        await step.run(ctx, lines.append)  # never a second downgrade


async def test_withdrawn_revision_is_refused(target_db_url: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(libpq_url(target_db_url))
    await conn.execute("UPDATE alembic_version SET version_num = '20260201_000007'")
    await conn.close()
    ctx = step_context(sandbox_settings(target_db_url, tmp_path))
    plan = await DowngradeStep().plan(ctx)
    assert plan.warnings and "found revision 20260201_000007" in plan.warnings[0]
    with pytest.raises(StepError) as refused:
        await DowngradeStep().run(ctx, lambda _l: None)
    assert "found revision 20260201_000007; expected one of 20260208_000007" in str(refused.value)
    assert "20260201_000006 (already rolled back)" in str(refused.value)


async def test_the_downgrade_sees_its_own_settings_and_none_of_the_bots(
    target_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failing downgrade that prints its whole environment (as the real service's settings
    do) can only print what it was configured with."""
    from tests.steps.test_process import BOT_SECRETS

    for name, value in BOT_SECRETS.items():
        monkeypatch.setenv(name, value)
    ctx = step_context(sandbox_settings(
        target_db_url, tmp_path, downgrade_command="sh -c 'env; exit 1'",
        downgrade_env={"API_KEY": "service-door-key", "DEBUG": "true"}))
    lines: list[str] = []
    with pytest.raises(StepError, match=r"downgrade command failed \(exit 1\)"):
        await DowngradeStep().run(ctx, lines.append)
    seen = dict(line.split("=", 1) for line in lines if "=" in line)
    assert seen["API_KEY"] == "service-door-key" and seen["DEBUG"] == "true"
    assert seen["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert seen["DATABASE_URL"].endswith(target_db_url.rsplit("/", 1)[1]), "the TARGET's URL"
    assert not [s for s in BOT_SECRETS.values() if s in "\n".join(lines)]
