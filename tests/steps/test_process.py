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
