"""Step 1: `pg_dump -F c` of the target, verified with `pg_restore --list`, sized and hashed.

The dump is written to a `.partial` file and renamed only once verified, so a crash never leaves
a file that looks complete. A JSON sidecar ties the verified dump to its run for `check`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from bot.domain.step_protocol import CheckResult, Outcome, OutputSink, Plan, StepContext, StepError
from bot.domain.steps import StepName
from bot.urls import database_name, libpq_url, password_of
from steps.process import run_process
from steps.target_db import database_size, pretty_bytes, server_version_major

PREFIX = "backup_before_rollback_"


def _client_env(url: str) -> dict[str, str]:
    """The password travels in PGPASSWORD only: never in an argument list or a log line."""
    env = dict(os.environ)
    password = password_of(url)
    if password:
        env["PGPASSWORD"] = password
    return env


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
        return Plan(
            step=self.name,
            summary=f"pg_dump -F c of {database_name(url)} ({pretty_bytes(size)}) to {target}",
            facts={"database": database_name(url), "backup_dir": str(s.backup_dir),
                   "pg_dump_major": client, "server_major": server},
            details=(f"server PostgreSQL {server}, pg_dump {client}",
                     "verified with pg_restore --list; size and sha256 recorded"),
            warnings=warnings,
        )

    async def check(self, ctx: StepContext) -> CheckResult:
        for sidecar in sorted(ctx.settings.backup_dir.glob(f"{PREFIX}*.dump.json"), reverse=True):
            meta = json.loads(sidecar.read_text())
            dump = Path(meta.get("path", ""))
            if meta.get("run_id") != ctx.run_id or not dump.exists():
                continue
            if await asyncio.to_thread(file_sha256, dump) == meta.get("sha256"):
                return CheckResult(True, f"verified backup {dump} exists")
        return CheckResult(False, "no verified backup for this run")

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        s = ctx.settings
        url = s.target_database_url.get_secret_value()
        server, client = await server_version_major(url), await pg_dump_major(s.pg_dump_path)
        if pg_dump_too_old(client, server):
            raise StepError(f"pg_dump {client} is older than the server ({server}); install a "
                            f"pg_dump {server} or newer and set PG_DUMP_PATH")
        s.backup_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
        final = s.backup_dir / f"{PREFIX}{stamp}.dump"
        partial = final.with_name(final.name + ".partial")
        env = _client_env(url)
        emit(f"pg_dump -F c of {database_name(url)} to {final}")
        try:
            dumped = await run_process(
                [s.pg_dump_path, "-F", "c", "-f", str(partial), "-d", libpq_url(url)],
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
        final.with_name(final.name + ".json").write_text(
            json.dumps({**facts, "run_id": ctx.run_id}, indent=2)
        )
        return Outcome(summary=f"backup {final.name} ({pretty_bytes(size)}) verified",
                       facts=facts)
