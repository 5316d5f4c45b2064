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
