"""Settings: runbook defaults, the contract's names, and one clear message for what is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import Settings, SettingsError, load_settings


def test_defaults_follow_the_runbook(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.target_database_url.get_secret_value() == (
        "postgresql://postgres@localhost:54432/claude_agent_api"
    )
    assert s.api_base_url == "http://localhost:54000"
    assert s.rollback_channel == "oncall-engineering"
    assert s.phase2_revision == "20260201_000006"
    assert s.downgrade_command == "alembic downgrade 20260201_000006"


def test_comma_lists_and_secrets_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPROVER_USER_IDS", "U1, U2,,U3")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-value")
    monkeypatch.setenv("DOWNGRADE_ENV", '{"API_KEY": "k", "DEBUG": "true"}')
    s = load_settings()
    assert s.approver_user_ids == ("U1", "U2", "U3")
    assert "xoxb-secret-value" not in repr(s)
    assert s.downgrade_env == {"API_KEY": "k", "DEBUG": "true"}


def test_require_names_every_missing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SettingsError) as err:
        load_settings(_env_file=None).require("database_url", "slack_bot_token", "slack_app_token")
    assert "DATABASE_URL, SLACK_BOT_TOKEN, SLACK_APP_TOKEN" in str(err.value)


def test_cli_reports_missing_settings_without_traceback(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "migrate"], cwd=tmp_path, env=env,
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert "missing required setting: DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_reports_invalid_values(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MAILER": "carrier-pigeon"}
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "migrate"], cwd=tmp_path, env=env,
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert "MAILER" in result.stderr and "Traceback" not in result.stderr


def test_env_example_lists_every_setting_and_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    example = Path(__file__).resolve().parents[1] / ".env.example"
    listed = set(re.findall(r"^([A-Z0-9_]+)=", example.read_text(), re.MULTILINE))
    assert listed == {name.upper() for name in Settings.model_fields}
    loaded = Settings(_env_file=example)  # type: ignore[call-arg]
    assert loaded.client_directory is None  # an empty value means "not set", not "."
    assert loaded.database_url is None
