"""Step 1 on a real server: a verified dump, refusals that say why, and no password in argv."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import asyncpg
import pytest

from bot.domain.step_protocol import StepError
from bot.urls import libpq_url
from steps.backup import BackupStep
from tests.steps.step_context import settings_for, step_context


@pytest.fixture
async def small_db(empty_db_url: str) -> str:
    conn = await asyncpg.connect(libpq_url(empty_db_url))
    await conn.execute("CREATE TABLE sessions (id int PRIMARY KEY, owner_api_key_hash text);"
                       "INSERT INTO sessions SELECT g, md5(g::text) FROM generate_series(1, 50) g")
    await conn.close()
    return empty_db_url


def fake_pg_dump(tmp_path: Path, version: str) -> Path:
    """A pg_dump that reports `version` and records the arguments and password it was given."""
    script = tmp_path / "pg_dump"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then echo "pg_dump (PostgreSQL) {version}"; exit 0; fi\n'
        f'echo "$@" > {tmp_path}/argv\n'
        f'echo "$PGPASSWORD" > {tmp_path}/pgpassword\n'
        "exit 1\n"
    )
    script.chmod(0o755)
    return script


async def test_dump_is_verified_hashed_and_checked(small_db: str, tmp_path: Path) -> None:
    settings = settings_for(target_database_url=small_db, backup_dir=tmp_path / "backups")
    ctx = step_context(settings)
    step = BackupStep()
    plan = await step.plan(ctx)
    assert "pg_dump -F c of" in plan.summary and not plan.warnings
    assert not (await step.check(ctx)).done
    lines: list[str] = []
    outcome = await step.run(ctx, lines.append)
    dump = Path(outcome.facts["path"])
    assert dump.name.startswith("backup_before_rollback_") and dump.suffix == ".dump"
    listed = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, text=True,
                            check=True)
    assert "TABLE public sessions" in listed.stdout
    assert outcome.facts["size_bytes"] == dump.stat().st_size
    assert outcome.facts["toc_entries"] > 0 and len(outcome.facts["sha256"]) == 64
    assert (await step.check(ctx)).done
    assert not (await step.check(step_context(settings))).done, "another run's dump is not ours"
    assert any("verified" in line for line in lines)
    assert not list(dump.parent.glob("*.partial"))


async def test_missing_database_fails_clearly_and_leaves_no_dump(
    pg_admin_url: str, tmp_path: Path
) -> None:
    from bot.urls import with_database

    url = with_database(pg_admin_url, "no_such_database_for_backup")
    settings = settings_for(target_database_url=url, backup_dir=tmp_path)
    with pytest.raises((StepError, asyncpg.InvalidCatalogNameError)):
        await BackupStep().run(step_context(settings), lambda _l: None)
    assert list(tmp_path.iterdir()) == []


async def test_pg_dump_older_than_server_is_refused(small_db: str, tmp_path: Path) -> None:
    settings = settings_for(target_database_url=small_db, backup_dir=tmp_path / "b",
                            pg_dump_path=str(fake_pg_dump(tmp_path, "9.6.0")))
    plan = await BackupStep().plan(step_context(settings))
    assert any("older than the server" in w for w in plan.warnings)
    with pytest.raises(StepError, match="pg_dump 9 is older than the server"):
        await BackupStep().run(step_context(settings), lambda _l: None)
    assert not (tmp_path / "argv").exists(), "no dump may be attempted"


async def test_password_travels_only_in_the_environment(small_db: str, tmp_path: Path) -> None:
    with_password = small_db.replace("postgres@", "postgres:s3cret-pw@")
    settings = settings_for(target_database_url=with_password, backup_dir=tmp_path / "b",
                            pg_dump_path=str(fake_pg_dump(tmp_path, "99.0")))
    lines: list[str] = []
    with pytest.raises(StepError, match="pg_dump failed"):
        await BackupStep().run(step_context(settings), lines.append)
    assert "s3cret-pw" not in (tmp_path / "argv").read_text()
    assert (tmp_path / "pgpassword").read_text().strip() == "s3cret-pw"
    assert not any("s3cret-pw" in line for line in lines)
    assert json.dumps(lines).count("s3cret") == 0


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def test_dump_and_sidecar_are_private_and_a_corrupt_sidecar_never_blocks(
    small_db: str, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    garbage = backups / "backup_before_rollback_20990101_000000.dump.json"
    garbage.write_text('{"run_id": "x", "path": ')  # cut off mid-write by an old version
    listed = backups / "backup_before_rollback_20990101_000001.dump.run.json"
    listed.write_text("[1, 2, 3]")
    settings = settings_for(target_database_url=small_db, backup_dir=backups)
    first, second = step_context(settings), step_context(settings)
    step = BackupStep()
    plan = await step.plan(first)
    assert any(garbage.name in line and listed.name in line for line in plan.details)
    check = await step.check(first)
    assert not check.done and garbage.name in check.reason and listed.name in check.reason

    old_umask = os.umask(0o000)  # the most permissive: files must still come out 0600
    try:
        dump = Path((await step.run(first, lambda _l: None)).facts["path"])
        other = Path((await step.run(second, lambda _l: None)).facts["path"])
    finally:
        os.umask(old_umask)
    assert mode(dump) == 0o600 and mode(other) == 0o600
    mine = backups / f"{dump.name}.{first.run_id}.json"
    theirs = backups / f"{other.name}.{second.run_id}.json"
    assert mode(mine) == 0o600 and mode(theirs) == 0o600, "one sidecar per run, both private"
    assert json.loads(mine.read_text())["run_id"] == first.run_id
    assert (await step.check(first)).done and (await step.check(second)).done
    assert not [p for p in backups.iterdir() if p.name.endswith(".partial")]
