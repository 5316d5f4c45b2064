"""Targets in configuration: TARGETS names them, each target's settings under its prefix,
validated as the plain ones; today's settings are the target `default`; a target with settings
missing or wrong is refused with what, and the others keep working; the CLI says which
targets exist when it is given an unknown one."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.preflight import check_targets
from bot.settings import Settings, SettingsError
from bot.targets import DEFAULT_TARGET, TargetRefused, UnknownTarget, load_targets

BIN = Path(sys.prefix) / "bin" / "rollback-bot"
STAGING = {"STAGING__TARGET_DATABASE_URL": "postgresql://stage@db-staging/api",
           "STAGING__API_BASE_URL": "http://staging:8000",
           "STAGING__APPROVER_USER_IDS": "U_S1,U_S2,U_S3"}
PRODUCTION = {"PRODUCTION__TARGET_DATABASE_URL": "postgresql://prod@db-prod/api",
              "PRODUCTION__API_BASE_URL": "http://prod:8000"}


def base(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_without_targets_todays_settings_are_the_default_target() -> None:
    settings = base(target_database_url="postgresql://x@h/db", smtp_port=2525)
    targets = load_targets(settings, environ={"STAGING__SMTP_PORT": "1"}, env_file=None)
    assert targets.names == (DEFAULT_TARGET,) and not targets.several
    only = targets.get(None)
    assert only.target_name == DEFAULT_TARGET and only.smtp_port == 2525
    assert only.target_database_url.get_secret_value() == "postgresql://x@h/db"
    assert targets.get("default") is only


def test_each_target_has_its_own_settings_and_inherits_the_rest() -> None:
    settings = base(targets="staging,production", step_timeout_seconds=99,
                    approver_user_ids="U_A,U_B")
    targets = load_targets(settings, environ={**STAGING, **PRODUCTION,
                                              "PRODUCTION__SMTP_PORT": "2525"}, env_file=None)
    staging, production = targets.get("staging"), targets.get("PRODUCTION")
    assert (staging.target_name, production.target_name) == ("staging", "production")
    assert staging.target_database_url.get_secret_value() == "postgresql://stage@db-staging/api"
    assert production.api_base_url == "http://prod:8000" and production.smtp_port == 2525
    assert staging.smtp_port == 25, "a target's setting is its own"
    assert staging.approver_user_ids == ("U_S1", "U_S2", "U_S3")
    assert production.approver_user_ids == ("U_A", "U_B"), "what it does not set, it inherits"
    assert production.step_timeout_seconds == 99
    with pytest.raises(UnknownTarget, match="several targets are configured; name one of "
                                            "staging, production"):
        targets.get(None)


def test_an_unknown_target_names_the_known_ones() -> None:
    targets = load_targets(base(targets="staging,production"), environ={**STAGING, **PRODUCTION},
                           env_file=None)
    with pytest.raises(UnknownTarget, match="unknown target 'stagin'; known targets: staging, "
                                            "production"):
        targets.get("stagin")


@pytest.mark.parametrize(("extra", "why"), [
    ({}, "missing PRODUCTION__TARGET_DATABASE_URL, PRODUCTION__API_BASE_URL"),
    ({**PRODUCTION, "PRODUCTION__SLACK_BOT_TOKEN": "xoxb-2"},
     "PRODUCTION__SLACK_BOT_TOKEN is bot-wide: set SLACK_BOT_TOKEN once"),
    ({**PRODUCTION, "PRODUCTION__DATABASE_URL": "postgresql://bot2"},
     "PRODUCTION__DATABASE_URL is bot-wide"),
    ({**PRODUCTION, "PRODUCTION__SMTP_PORT": "twenty-five"},
     "PRODUCTION__SMTP_PORT: Input should be a valid integer"),
    ({**PRODUCTION, "PRODUCTION__SMTP_HOTS": "mail"}, "PRODUCTION__SMTP_HOTS is not a setting"),
])
def test_a_target_with_bad_settings_is_refused_and_the_other_keeps_working(
    extra: dict[str, str], why: str,
) -> None:
    targets = load_targets(base(targets="staging,production"), environ={**STAGING, **extra},
                           env_file=None)
    assert targets.names == ("staging", "production")
    assert why in targets.refused["production"]
    assert "xoxb-2" not in targets.refused["production"], "no secret shown"
    with pytest.raises(TargetRefused, match="target production is refused: "):
        targets.get("production")
    assert targets.get("staging").api_base_url == "http://staging:8000"


def test_prefixed_lines_of_the_env_file_count_and_the_environment_beats_them(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("STAGING__TARGET_DATABASE_URL=postgresql://file/db\n"
                        "STAGING__API_BASE_URL=http://from-file:1\n")
    targets = load_targets(base(targets="staging"),
                           environ={"STAGING__API_BASE_URL": "http://from-env:2"},
                           env_file=env_file)
    staging = targets.get("staging")
    assert staging.target_database_url.get_secret_value() == "postgresql://file/db"
    assert staging.api_base_url == "http://from-env:2"


@pytest.mark.parametrize(("names", "why"), [("staging,Staging", "names a target twice"),
                                            ("prod-eu", "is not a target name")])
def test_bad_target_names_stop_the_configuration(names: str, why: str) -> None:
    with pytest.raises(SettingsError, match=why):
        load_targets(base(targets=names), environ={}, env_file=None)


async def test_check_refuses_the_incomplete_target_and_checks_the_other() -> None:
    targets = load_targets(base(targets="staging,production", restart_strategy="command",
                                restart_command="true"),
                           environ=STAGING, env_file=None)
    out = io.StringIO()
    assert await check_targets(targets, None, out) == 1
    printed = out.getvalue()
    assert "— target staging —" in printed and "— target production —" in printed
    assert ("PROBLEM target production: refused: missing PRODUCTION__TARGET_DATABASE_URL, "
            "PRODUCTION__API_BASE_URL") in printed
    staging = printed.split("— target staging —")[1].split("— target production —")[0]
    assert "target database" in staging.lower(), "staging is still checked line by line"


def run_command(*argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), **env}
    return subprocess.run([str(BIN), *argv], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_cli_names_the_known_targets_and_what_a_refused_one_lacks(tmp_path: Path) -> None:
    env = {"TARGETS": "staging,production", **STAGING}
    unknown = run_command("plan", "--target", "stagin", cwd=tmp_path, **env)
    assert unknown.returncode == 2
    assert "unknown target 'stagin'; known targets: staging, production" in unknown.stderr
    refused = run_command("check", "--target", "production", cwd=tmp_path, **env)
    assert refused.returncode == 2
    assert "target production is refused: missing PRODUCTION__TARGET_DATABASE_URL" in \
        refused.stderr
    unnamed = run_command("plan", cwd=tmp_path, **env)
    assert unnamed.returncode == 2 and "name one of staging, production" in unnamed.stderr


async def test_check_counts_the_two_person_rule_on_each_targets_own_approvers() -> None:
    from bot.preflight import check_approvers

    targets = load_targets(base(targets="staging,production", approver_user_ids="U_A,U_B"),
                           environ={**STAGING, **PRODUCTION}, env_file=None)
    staging = await check_approvers(targets.get("staging"))
    production = await check_approvers(targets.get("production"))
    assert staging is not None and staging.ok and "3 engineers by id" in staging.text()
    assert production is not None and not production.ok and not production.blocking
    assert ("warning approvers: only 2 engineers by id (PRODUCTION__APPROVER_USER_IDS (or "
            "APPROVER_USER_IDS)): every step needs 2 approvals besides the initiator") \
        in production.text()
