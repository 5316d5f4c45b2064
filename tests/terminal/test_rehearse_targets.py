"""`make demo-targets` end to end (`rehearse --sandbox --targets staging,production`): two
sandboxes on one bot database, staging rehearsed, production's plan quoting that rehearsal,
then production rolled back; each target's run, keys and emails its own."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bot.domain.states import RunStatus
from bot.settings import Settings, SettingsError
from bot.terminal.approvals import NamedApprovers
from bot.terminal.decisions import ApprovalSource
from bot.terminal.rehearse import RehearsalOptions
from bot.terminal.rehearse_targets import rehearse_targets, target_pair

CLIENTS = 3


async def test_staging_is_rehearsed_then_productions_plan_quotes_it(
    tmp_path: Path, pg_admin_url: str,
) -> None:
    base = Settings(_env_file=None, database_url=pg_admin_url)  # type: ignore[call-arg]
    options = RehearsalOptions(approvers=("alice", "bob"), initiator="carol", clients=CLIENTS,
                               folder=tmp_path / "demo", use_docker=False)
    approvals: ApprovalSource = NamedApprovers(["alice", "bob"])
    out = io.StringIO()
    staging, production = await rehearse_targets(options, base, ("staging", "production"),
                                                 out, approvals)
    printed = out.getvalue()
    assert staging.status is production.status is RunStatus.COMPLETED, printed[-3000:]
    assert (staging.target, production.target) == ("staging", "production")
    plan = printed.split("2. production's plan")[1].split("3. The rollback on production")[0]
    assert "Dry run on target production — nothing changed:" in plan
    assert (f"Last rehearsal on staging: run {staging.run_id[:8]} by carol, ended " in plan
            and "(less than an hour ago): completed" in plan)
    assert "    2. Alembic downgrade to Phase 2: succeeded, " in plan
    assert "⚠ no rehearsal" not in plan and "⚠ staging was at" not in plan
    assert f"Rollback on production {production.run_id[:8]} · completed" in printed
    for name in ("staging", "production"):
        emails = list((tmp_path / "demo" / name / "outbox").glob("*.eml"))
        assert len(emails) == CLIENTS - 1, name
    assert (tmp_path / "demo" / "transcript.txt").read_text() == printed


@pytest.mark.parametrize("value", ["staging", "staging,staging", "a,b,c"])
def test_targets_takes_two_distinct_names(value: str) -> None:
    with pytest.raises(SettingsError, match="--targets takes two names"):
        target_pair(value)
