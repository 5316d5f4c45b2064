"""The process runner: lines arrive as they are printed, time limits kill the whole group."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.domain.step_protocol import StepError
from steps.process import run_process


async def test_lines_stream_in_order_with_exit_code() -> None:
    lines: list[str] = []
    result = await run_process(
        ["sh", "-c", "echo one; echo two >&2; echo three; exit 3"], emit=lines.append
    )
    assert lines == ["one", "two", "three"]
    assert result.returncode == 3 and result.tail == lines


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for its (dead) parent to be reaped by init."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_time_limit_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    with pytest.raises(StepError, match=r"did not finish within 0\.5 s"):
        await run_process(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"],
                          emit=lambda _l: None, time_limit=0.5)
    child = int(pidfile.read_text())
    assert not running(child), "the grandchild `sleep` must be gone too"


async def test_missing_program_and_workdir_are_named(tmp_path: Path) -> None:
    with pytest.raises(StepError, match="no-such-program-xyz"):
        await run_process(["no-such-program-xyz"], emit=lambda _l: None)
    with pytest.raises(StepError, match="does not exist"):
        await run_process(["true"], emit=lambda _l: None, cwd=tmp_path / "missing")


BOT_SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-bot-secret-1", "SLACK_APP_TOKEN": "xapp-app-secret-2",
    "SLACK_SIGNING_SECRET": "signing-secret-3", "SMTP_PASSWORD": "smtp-secret-4",
    "DATABASE_URL": "postgresql://bot:bot-db-secret-5@db/bot",
}


async def test_a_child_gets_a_minimal_environment_never_the_bots_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in BOT_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    lines: list[str] = []
    result = await run_process(["env"], emit=lines.append, env={"PGPASSWORD": "configured"})
    assert result.returncode == 0
    seen = dict(line.split("=", 1) for line in lines if "=" in line)
    assert set(seen) <= {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                         "PGPASSWORD", "PWD"}, sorted(seen)
    assert seen["PGPASSWORD"] == "configured" and seen["LANG"] == "C.UTF-8" and "PATH" in seen
    assert not [s for s in BOT_SECRETS.values() if s in "\n".join(lines)]
