"""Running an outside program: output streamed line by line, a timeout, and a clean kill.

The child gets its own process group so a timeout or a cancel takes down everything it started
(an `alembic` that spawned a helper, a shell pipeline) and nothing is left running unseen.

It also gets a minimal environment, never the bot's own: PATH, HOME and the locale (plus TZ and
TMPDIR when set), then only what its step configures for it (PGPASSWORD for pg_dump,
DOWNGRADE_ENV and the target's DATABASE_URL for the downgrade). The bot's Slack tokens, its SMTP
password and its own DATABASE_URL live in its environment; a child that prints its environment
when it fails (the real service's settings do) must have none of them to print.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.domain.step_protocol import OutputSink, StepError

TAIL_LINES = 50
PR_SET_PDEATHSIG = 1
# Loaded here, in the parent: between fork and exec the child must not dlopen anything.
_LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child: receive SIGKILL when the bot dies, so no step outlives it unobserved."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
KILL_GRACE_SECONDS = 3.0
PASSED_TO_CHILDREN = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


def child_environment(configured: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment a child gets: the passed-through basics, then `configured`."""
    basics = {name: os.environ[name] for name in PASSED_TO_CHILDREN if name in os.environ}
    return {**basics, **(configured or {})}


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    tail: list[str]


class ProcessRunner(Protocol):
    async def __call__(
        self, argv: Sequence[str], *, emit: OutputSink, cwd: Path | None = None,
        env: Mapping[str, str] | None = None, time_limit: float | None = None,
    ) -> ProcessResult: ...


def resolve_program(name: str) -> str:
    """A program on PATH, else beside this Python (a venv's `alembic`), else a clear error."""
    if os.sep in name:
        if Path(name).exists():
            return name
    else:
        found = shutil.which(name) or shutil.which(name, path=str(Path(sys.prefix) / "bin"))
        if found:
            return found
    raise StepError(f"cannot run {name!r}: no such program (check PATH or the configured path)")


async def run_process(
    argv: Sequence[str], *, emit: OutputSink, cwd: Path | None = None,
    env: Mapping[str, str] | None = None, time_limit: float | None = None,
    stdin_data: bytes | None = None,
) -> ProcessResult:
    """Run `argv`; `env` is what the step configures for this child, ADDED to the minimal
    environment (`child_environment`): the bot's own environment is never passed on.
    `stdin_data` is written to the child's stdin, then closed: the one way a secret (a new
    key) may reach a program, never its argv, which any user of the machine can read."""
    program = resolve_program(argv[0])
    if cwd is not None and not Path(cwd).is_dir():
        raise StepError(f"cannot run {argv[0]!r}: working directory {cwd} does not exist")
    process = await asyncio.create_subprocess_exec(
        program, *argv[1:], cwd=cwd, env=child_environment(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL if stdin_data is None else asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_die_with_parent if _LIBC is not None else None,
    )
    tail: deque[str] = deque(maxlen=TAIL_LINES)

    async def pump() -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            tail.append(line)
            emit(line)

    async def feed() -> None:
        if process.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            process.stdin.write(stdin_data or b"")
            await process.stdin.drain()
        process.stdin.close()

    try:
        async with asyncio.timeout(time_limit):
            await asyncio.gather(feed(), pump())
            returncode = await process.wait()
    except TimeoutError:
        await _kill_group(process)
        raise StepError(
            f"{Path(argv[0]).name} did not finish within {time_limit:g} s and was stopped"
        ) from None
    except BaseException:
        await _kill_group(process)
        raise
    return ProcessResult(returncode, list(tail))


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(process.wait(), KILL_GRACE_SECONDS)
            return
        except TimeoutError:
            continue
