"""`rollback-bot rehearse` refuses what would surprise an operator, before touching anything."""

from __future__ import annotations

import argparse

import pytest

from bot.settings import Settings, SettingsError
from bot.terminal.rehearse import add_rehearse_arguments, rehearse_command


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_rehearse_arguments(parser)
    return parser.parse_args(list(argv))


def test_a_configured_target_needs_real_or_sandbox() -> None:
    configured = Settings(_env_file=None,  # type: ignore[call-arg]
                          target_database_url="postgresql://postgres@db.prod:5432/claude_agent")
    with pytest.raises(SettingsError, match="pass --real"):
        rehearse_command(parse("--approver", "alice", "--approver", "bob"), configured)
    with pytest.raises(SettingsError, match="exclude each other"):
        rehearse_command(parse("--real", "--sandbox"), configured)


def test_real_without_a_target_and_no_approvers_off_a_terminal_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unconfigured = Settings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(SettingsError, match="--real needs TARGET_DATABASE_URL"):
        rehearse_command(parse("--real"), unconfigured)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(SettingsError, match="--approver NAME twice"):
        rehearse_command(parse(), unconfigured)


def test_arguments_default_to_a_small_sandbox_in_a_fresh_folder() -> None:
    args = parse("--approver", "alice", "--approver", "bob")
    assert args.approver == ["alice", "bob"] and args.clients == 20 and args.dir is None
    assert not args.real and not args.keep
