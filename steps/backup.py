"""Step 1: `pg_dump -F c` of the target, verified with `pg_restore --list`, sized and hashed.

The dump is written to a `.partial` file and renamed only once verified, so a crash never leaves
a file that looks complete. Both are mode 0600: a dump holds every row of the target. A JSON
sidecar per run (`<dump>.<run id>.json`, written atomically, 0600) ties the verified dump to its
run for `check`; a sidecar that cannot be read is named and skipped, never in the way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from bot.domain.step_protocol import CheckResult, Outcome, OutputSink, Plan, StepContext, StepError
from bot.domain.steps import StepName
from bot.urls import database_name, tool_env, tool_url
from steps.files import create_private, make_private_dir, write_private
from steps.process import run_process
from steps.target_db import database_size, pretty_bytes, server_version_major

PREFIX = "backup_before_rollback_"


async def pg_dump_major(program: str, time_limit: float = 30.0) -> int:
    """The major version of a PostgreSQL client tool (`pg_dump --version`); StepError if none.

    Step 1 refuses a pg_dump older than the server; `check` asks the same question."""
    lines: list[str] = []
    result = await run_process([program, "--version"], emit=lines.append, time_limit=time_limit)
    match = re.search(r"(\d+)(?:\.\d+)?", " ".join(lines))
    if result.returncode != 0 or not match:
        raise StepError(f"cannot tell the version of {program}: {' '.join(lines)[:200]}")
    return int(match.group(1))


def pg_dump_too_old(client_major: int, server_major: int) -> bool:
    """pg_dump refuses (or silently mis-dumps) servers newer than itself."""
    return client_major < server_major


def sidecar_path(dump: Path, run_id: str) -> Path:
    return dump.with_name(f"{dump.name}.{run_id}.json")


def read_sidecar(path: Path) -> dict[str, str] | None:
    """The sidecar's run, dump path and sha256; None when it is not a readable sidecar."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(meta, dict) or not all(
            isinstance(meta.get(k), str) and meta[k] for k in ("run_id", "path", "sha256")):
        return None
    return {k: meta[k] for k in ("run_id", "path", "sha256")}


def sidecars(backup_dir: Path) -> tuple[list[tuple[Path, dict[str, str]]], list[str]]:
    """Readable sidecars, newest first, and the names of those that are not."""
    found: list[tuple[Path, dict[str, str]]] = []
    unreadable: list[str] = []
    for path in sorted(backup_dir.glob(f"{PREFIX}*.json"), reverse=True):
        meta = read_sidecar(path)
        if meta is None:
            unreadable.append(path.name)
        else:
            found.append((path, meta))
    return found, unreadable


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class BackupStep:
    name = StepName.BACKUP

    async def plan(self, ctx: StepContext) -> Plan:
        s = ctx.settings
        url = s.target_database_url.get_secret_value()
        server = await server_version_major(url)
        client = await pg_dump_major(s.pg_dump_path)
        size = await database_size(url)
        warnings = () if not pg_dump_too_old(client, server) else (
            f"pg_dump {client} is older than the server ({server}): the backup will be refused",
        )
        target = s.backup_dir / f"{PREFIX}<YYYYmmdd_HHMMSS>.dump"
        _, unreadable = await asyncio.to_thread(sidecars, s.backup_dir)
        skipped = (f"unreadable backup sidecars skipped: {', '.join(unreadable[:5])}",) \
            if unreadable else ()
        return Plan(
            step=self.name,
            summary=f"pg_dump -F c of {database_name(url)} ({pretty_bytes(size)}) to {target}",
            facts={"database": database_name(url), "backup_dir": str(s.backup_dir),
                   "pg_dump_major": client, "server_major": server},
            details=(f"server PostgreSQL {server}, pg_dump {client}",
                     "verified with pg_restore --list; size and sha256 recorded", *skipped),
            warnings=warnings,
        )

    async def check(self, ctx: StepContext) -> CheckResult:
        found, unreadable = await asyncio.to_thread(sidecars, ctx.settings.backup_dir)
        for _, meta in found:
            dump = Path(meta["path"])
            if meta["run_id"] != ctx.run_id or not dump.is_file():
                continue
            if await asyncio.to_thread(file_sha256, dump) == meta["sha256"]:
                return CheckResult(True, f"verified backup {dump} exists")
        reason = "no verified backup for this run"
        if unreadable:
            reason += f" (unreadable sidecars skipped: {', '.join(unreadable[:5])})"
        return CheckResult(False, reason)

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        s = ctx.settings
        url = s.target_database_url.get_secret_value()
        server, client = await server_version_major(url), await pg_dump_major(s.pg_dump_path)
        if pg_dump_too_old(client, server):
            raise StepError(f"pg_dump {client} is older than the server ({server}); install a "
                            f"pg_dump {server} or newer and set PG_DUMP_PATH")
        make_private_dir(s.backup_dir)
        stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
        final = s.backup_dir / f"{PREFIX}{stamp}.dump"
        partial = final.with_name(final.name + ".partial")
        emit(f"pg_dump -F c of {database_name(url)} to {final}")
        with tool_env(url) as env:  # the passwords, never in argv
            try:
                create_private(partial)  # pg_dump writes into it and keeps its mode
                dumped = await run_process(
                    [s.pg_dump_path, "-F", "c", "-f", str(partial), "-d", tool_url(url)],
                    emit=emit, env=env,
                )
                if dumped.returncode != 0:
                    raise StepError(f"pg_dump failed (exit {dumped.returncode}): "
                                    + " | ".join(dumped.tail[-3:]))
                # The hash is taken in a thread (hashlib lets go of the GIL), beside the check, and
                # never on the event loop: Slack still gets its acks while a large dump is read.
                hashing = asyncio.create_task(asyncio.to_thread(file_sha256, partial))
                toc: list[str] = []
                try:
                    listed = await run_process([s.pg_restore_path, "--list", str(partial)],
                                               emit=toc.append, env=env)
                finally:
                    digest = await hashing
                entries = sum(1 for line in toc if line and not line.startswith(";"))
                if listed.returncode != 0 or entries == 0:
                    raise StepError("the dump did not verify with pg_restore --list: "
                                    + " | ".join(listed.tail[-3:]))
                partial.rename(final)
            finally:
                partial.unlink(missing_ok=True)
        size = final.stat().st_size
        emit(f"verified: {entries} TOC entries, {pretty_bytes(size)}, sha256 {digest}")
        facts = {"path": str(final.resolve()), "size_bytes": size, "sha256": digest,
                 "toc_entries": entries}
        write_private(sidecar_path(final, ctx.run_id),
                      json.dumps({**facts, "run_id": ctx.run_id}, indent=2).encode())
        return Outcome(summary=f"backup {final.name} ({pretty_bytes(size)}) verified",
                       facts=facts)
