"""The terminal with several targets: break-glass (`rehearse --real --target T`) holds the
two-person rule on T's own approvers; `follow-ups`, `escalate` and `verify-log` act on the runs
of the target `--target` names, and an unknown one names the known ones."""

from __future__ import annotations

import argparse
import io

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.cli import build_parser
from bot.engine.engine import Click, Engine
from bot.settings import Settings, SettingsError
from bot.targets import load_targets
from bot.terminal.follow_ups import follow_ups, target_of
from bot.terminal.rehearse import add_rehearse_arguments, check_break_glass, rehearse_command
from bot.terminal.verify_log import verify_log
from tests.engine.fake_steps import as_steps, scripted_steps
from tests.engine.test_engine_flow import BOB, start

ENVIRON = {
    "TARGETS": "staging,production",
    "STAGING__TARGET_DATABASE_URL": "postgresql://stage@db-staging/api",
    "STAGING__API_BASE_URL": "http://staging:8000",
    "STAGING__APPROVER_USER_IDS": "U_ALICE,U_BOB,U_CAROL",
    "PRODUCTION__TARGET_DATABASE_URL": "postgresql://prod@db-prod/api",
    "PRODUCTION__API_BASE_URL": "http://prod:8000",
    "PRODUCTION__APPROVER_USER_IDS": "U_DAVE,U_ERIN,U_FRANK",
    # Break-glass approvals need each engineer's own TOTP secret (not the subject here).
    "BREAK_GLASS_TOTP_SECRETS": "U_DAVE=MFRGGZDFMZTWQ2LK,U_ERIN=JBSWY3DPEHPK3PXP,"
                                "U_FRANK=KRSXG5CTMVRXEZLU",
}


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> Settings:
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(str(tmp_path))  # no .env of anyone's
    return Settings(_env_file=None, targets="staging,production")  # type: ignore[call-arg]


def rehearse_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_rehearse_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(("argv", "why"), [
    (("--target", "production", "--approver", "U_BOB", "--approver", "U_CAROL",
      "--initiator", "U_ALICE"),
     "not configured approvers \\(APPROVER_USER_IDS of target production\\): U_BOB, U_CAROL"),
    (("--target", "production", "--approver", "U_ERIN", "--approver", "U_FRANK",
      "--initiator", "U_ALICE"), "--initiator U_ALICE is not a configured approver"),
    (("--target", "production", "--approver", "U_ERIN", "--approver", "U_ERIN",
      "--initiator", "U_DAVE"), "two different approvers"),
    (("--approver", "U_ERIN", "--approver", "U_FRANK", "--initiator", "U_DAVE"),
     "several targets are configured; name one of staging, production"),
    (("--target", "prodution", "--approver", "U_ERIN", "--approver", "U_FRANK"),
     "unknown target 'prodution'; known targets: staging, production"),
])
def test_break_glass_counts_the_two_person_rule_on_the_targets_own_approvers(
        environ: Settings, argv: tuple[str, ...], why: str) -> None:
    with pytest.raises(SettingsError, match=why):
        rehearse_command(rehearse_args("--real", *argv), environ)
    production = load_targets(environ).get("production")
    check_break_glass(production, ["U_ERIN", "U_FRANK"], "U_DAVE")  # its own: accepted
    with pytest.raises(SettingsError, match="cannot approve it"):
        check_break_glass(production, ["U_DAVE", "U_ERIN"], "U_DAVE")


async def test_follow_ups_and_verify_log_act_on_the_named_targets_runs(
        environ: Settings, bot_sessionmaker: async_sessionmaker[AsyncSession], bot_db_url: str,
) -> None:
    with_db = environ.model_copy(update={"database_url": SecretStr(bot_db_url)})
    targets = load_targets(with_db)
    engines = {name: Engine(bot_sessionmaker, targets.get(name), as_steps(scripted_steps()))
               for name in targets.names}
    try:
        runs = {name: await start(engine) for name, engine in engines.items()}
        # Production's engine refuses a click on staging's run, whoever sent it there.
        staging_run = await engines["staging"].run_view(runs["staging"])
        step = staging_run.steps[0]
        refused = await engines["production"].approve(Click(
            BOB, runs["staging"], step.execution_id or "", step.plan.fingerprint
            if step.plan else ""))
        assert not refused.accepted and "belongs to the rollback on staging" in refused.message
        assert (await engines["staging"].run_view(runs["staging"])).steps[0].approvers == ()
    finally:
        for engine in engines.values():
            await engine.shutdown()

    for name in ("staging", "production"):
        out = io.StringIO()
        assert await follow_ups(targets.get(name), "list", None, None, out) == 0
        assert f"Rollback {runs[name][:8]} is active" in out.getvalue()
        out = io.StringIO()
        assert await verify_log(with_db, None, None, out, name) == 0
        assert f"run {runs[name]}:" in out.getvalue()
    with pytest.raises(SettingsError, match=f"run {runs['staging'][:8]} is a rollback on "
                                            "staging, not on production"):
        await verify_log(with_db, runs["staging"][:8], None, io.StringIO(), "production")

    parser = build_parser()
    for argv in (["follow-ups"], ["escalate", "why", "--as", "dana"]):
        with pytest.raises(SettingsError, match="name one of staging, production"):
            target_of(parser.parse_args(argv), with_db)
    with pytest.raises(SettingsError, match="unknown target 'qa'"):
        target_of(parser.parse_args(["follow-ups", "--target", "qa"]), with_db)
