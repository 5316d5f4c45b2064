"""Putting the new door key where the service reads it: its dotenv file, or a command.

`env-file` rewrites the `API_KEY=` line (SERVICE_ENV_VARIABLE) of the service's `.env` the way
an operator would want it done at 3 a.m.: the new file is written beside the old one with the
old one's mode and owner, flushed, and renamed over it (a reader sees the old file or the new,
never half of one); the previous file is kept beside it, mode 0600, for undoing by hand. Other
lines are kept byte for byte.

No file of ours is opened through a link: the new file and the kept copy are created as
`mkstemp` does (`O_CREAT|O_EXCL|O_NOFOLLOW`, unpredictable names, in the `.env`'s folder), so
a link planted where we write, at any name, is never followed, written or chowned; a `.env`
that is itself a link, or in a folder others than its owner may write to (where such links
could be planted, or the file swapped), is refused before step 4 generates any key.

`command` hands the key to a configured program on its stdin
(never in argv, which every user of the machine can read; never in the bot's log: the key is
masked in whatever the program prints).

Neither prints the value. A running service does not see the change by itself: pydantic-
settings reads `.env` once at startup, and a bind-mounted single file keeps showing a running
container the file it had before the rename; the restart that follows makes both read it anew.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shlex
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.domain.step_protocol import OutputSink, StepError
from bot.settings import KeyInstaller, Settings
from steps.process import run_process

MASK = "********"


@dataclass(frozen=True)
class DoorKey:
    """A new key on its way to the service; shown nowhere, even in a traceback."""

    value: str
    hash: str

    def __repr__(self) -> str:
        return f"DoorKey({self.hash[:8]}…)"

    __str__ = __repr__


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _assignment(variable: str) -> re.Pattern[str]:
    return re.compile(rf"^(\s*)(export\s+)?{re.escape(variable)}\s*=")


def env_file_value(text: str, variable: str) -> str | None:
    """The value dotenv would read for `variable` (the last assignment wins)."""
    found: str | None = None
    pattern = _assignment(variable)
    for line in text.splitlines():
        if pattern.match(line):
            value = line.split("=", 1)[1].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            elif " #" in value:
                value = value.split(" #", 1)[0].rstrip()
            found = value
    return found


def with_new_value(text: str, variable: str, value: str) -> tuple[str, str]:
    """The file's text with every assignment of `variable` set to `value` (appended when there
    is none), and which of the two happened."""
    pattern = _assignment(variable)
    lines = text.splitlines(keepends=True)
    replaced = False
    for number, line in enumerate(lines):
        found = pattern.match(line)
        if found:
            ending = line[len(line.rstrip("\r\n")):] or "\n"
            lines[number] = f"{found.group(1)}{found.group(2) or ''}{variable}={value}{ending}"
            replaced = True
    if replaced:
        return "".join(lines), "rewritten"
    prefix = "" if not text or text.endswith("\n") else "\n"
    return f"{text}{prefix}{variable}={value}\n", "appended"


KEPT_INFIX = ".before-rollback-"


def env_file_problem(path: Path) -> str | None:
    """Why the installer would refuse `path` (before any key exists), or None."""
    try:
        info = os.lstat(path)
        folder = os.stat(path.parent)
    except OSError as exc:
        return f"cannot read the service's env file {path}: {exc.strerror}"
    if stat.S_ISLNK(info.st_mode):
        return (f"{path} is a symbolic link (to {os.readlink(path)}): the installer writes no "
                f"file through a link; set SERVICE_ENV_FILE to the file itself")
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    loose = stat.S_IMODE(folder.st_mode) & (stat.S_IWGRP | stat.S_IWOTH)
    if loose:
        return (f"{path.parent} is writable by others than its owner (mode "
                f"{stat.S_IMODE(folder.st_mode):04o}): whoever can write there could plant "
                f"links or swap the file the new key goes into; `chmod go-w {path.parent}`")
    return None


def _kept_prefix(path: Path, run_id: str) -> str:
    return f"{path.name}{KEPT_INFIX}{run_id[:8]}-"


def kept_copy(path: Path, run_id: str, uid: int) -> Path | None:
    """This run's copy of the file before it was touched (a Retry keeps it): a regular file,
    not a link, of the `.env`'s owner."""
    prefix = _kept_prefix(path, run_id)
    for candidate in sorted(path.parent.iterdir()):
        if not candidate.name.startswith(prefix):
            continue
        info = os.lstat(candidate)
        if stat.S_ISREG(info.st_mode) and info.st_uid == uid:
            return candidate
    return None


def _create_new(folder: Path, prefix: str, suffix: str, data: bytes, mode: int, uid: int,
                gid: int) -> Path:
    """A new file under an unpredictable name (mkstemp: O_CREAT|O_EXCL|O_NOFOLLOW, 0600),
    given its owner and mode, then its data, flushed."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    try:
        if (uid, gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    except OSError:
        os.close(fd)
        os.unlink(name)
        raise
    os.close(fd)
    return Path(name)


def _read_no_follow(path: Path) -> tuple[os.stat_result, bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        with os.fdopen(os.dup(fd), "rb") as file:
            return info, file.read()
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_in_env_file(path: Path, variable: str, key: DoorKey, run_id: str
                        ) -> dict[str, Any]:
    """Rewrite `variable=` in the dotenv at `path` (a regular file, never a link); the facts.

    The previous file is copied once per run: a Retry keeps the copy of the file as it was
    before this run touched it.
    """
    problem = env_file_problem(path)
    if problem is not None:
        raise StepError(problem)
    try:
        before, original = _read_no_follow(path)
    except OSError as exc:
        raise StepError(f"cannot read the service's env file {path}: {exc.strerror}") from None
    mode, uid, gid = stat.S_IMODE(before.st_mode), before.st_uid, before.st_gid
    text, how = with_new_value(original.decode("utf-8"), variable, key.value)
    partial: Path | None = None
    try:
        kept = kept_copy(path, run_id, uid) or _create_new(
            path.parent, _kept_prefix(path, run_id), "", original, 0o600, uid, gid)
        partial = _create_new(path.parent, f".{path.name}.rollback-bot-", ".partial",
                              text.encode("utf-8"), mode, uid, gid)
        os.replace(partial, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise StepError(f"cannot rewrite {path} with the same mode {mode:04o} and owner "
                        f"{uid}:{gid} ({exc.strerror}): run the bot as that user or as root, "
                        f"or use KEY_INSTALLER=command") from None
    written = env_file_value(_read_no_follow(path)[1].decode("utf-8"), variable)
    if written is None or sha256_hex(written) != key.hash:
        raise StepError(f"{path} does not hold the new {variable} after the rewrite")
    return {"installer": KeyInstaller.ENV_FILE.value, "file": str(path), "variable": variable,
            "line": how, "mode": f"{mode:04o}", "owner": f"{uid}:{gid}",
            "previous_kept_as": str(kept)}


async def install_by_command(command: str, key: DoorKey, emit: OutputSink,
                             env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run KEY_INSTALL_COMMAND with the key (and a newline) on stdin and KEY_INSTALL_ENV in
    its environment; its output is shown with the key masked."""
    words = shlex.split(command)
    if not words:
        raise StepError("KEY_INSTALLER=command but KEY_INSTALL_COMMAND is empty")

    def masked(line: str) -> str:
        return line.replace(key.value, MASK)

    emit(f"$ {command}  (the new key on its stdin)")
    result = await run_process(words, emit=lambda line: emit(masked(line)),
                               stdin_data=(key.value + "\n").encode(), env=env)
    if result.returncode != 0:
        raise StepError(f"key install command failed (exit {result.returncode}): "
                        + " | ".join(masked(line) for line in result.tail[-3:]))
    return {"installer": KeyInstaller.COMMAND.value, "command": command,
            "exit": result.returncode}


async def install_door_key(settings: Settings, key: DoorKey, run_id: str,
                           emit: OutputSink) -> dict[str, Any]:
    if settings.key_installer is KeyInstaller.COMMAND:
        return await install_by_command(settings.key_install_command, key, emit,
                                        settings.key_install_env)
    if settings.service_env_file is None:
        raise StepError("KEY_INSTALLER=env-file but SERVICE_ENV_FILE is not set (the "
                        "service's .env, e.g. /srv/claude-agent-api/.env)")
    facts = await asyncio.to_thread(install_in_env_file, settings.service_env_file,
                                    settings.service_env_variable, key, run_id)
    emit(f"{settings.service_env_variable} line {facts['line']} in {facts['file']} (mode "
         f"{facts['mode']}, owner {facts['owner']}); previous file kept as "
         f"{facts['previous_kept_as']} (mode 0600)")
    return facts


def installer_refusal(settings: Settings) -> str | None:
    """Why the configured installer would refuse to install, known before any key exists."""
    if settings.key_installer is KeyInstaller.COMMAND:
        return None if settings.key_install_command.strip() else \
            "KEY_INSTALLER=command but KEY_INSTALL_COMMAND is empty"
    if settings.service_env_file is None:
        return ("KEY_INSTALLER=env-file but SERVICE_ENV_FILE is not set (the service's .env, "
                "e.g. /srv/claude-agent-api/.env)")
    return env_file_problem(settings.service_env_file)


def install_target(settings: Settings) -> str:
    """Where the key goes, in words for plans and summaries."""
    if settings.key_installer is KeyInstaller.COMMAND:
        return f"`{settings.key_install_command or '(KEY_INSTALL_COMMAND empty)'}` (on stdin)"
    where = settings.service_env_file or "(SERVICE_ENV_FILE not set)"
    return f"the {settings.service_env_variable}= line of {where}"
