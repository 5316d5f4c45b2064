"""The sandbox's Alembic chain: real revision ids, the lossy downgrade, and the service's CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from sandbox.migrate import asyncpg_url, migrate
from tests.fixtures.postgres import DatabaseFactory
from tests.sandbox.helpers import fetch

SANDBOX_DIR = Path(__file__).resolve().parents[2] / "sandbox"
ALEMBIC = str(Path(sys.prefix) / "bin" / "alembic")


async def version(url: str) -> str:
    return str((await fetch(url, "SELECT version_num FROM alembic_version"))[0][0])


async def owner_columns(url: str) -> list[tuple[str, str, str, int | None]]:
    rows = await fetch(url, "SELECT table_name, column_name, data_type, character_maximum_length "
                            "FROM information_schema.columns WHERE table_schema = 'public' "
                            "AND column_name LIKE 'owner%' "
                            "ORDER BY 1, 2")
    return [tuple(r) for r in rows]  # type: ignore[misc]


async def column_types(url: str, column: str) -> dict[str, str]:
    rows = await fetch(url, "SELECT table_name, data_type FROM information_schema.columns "
                            "WHERE table_schema = 'public' AND column_name = $1", column)
    return {r[0]: r[1] for r in rows}


async def test_chain_up_down_to_phase2_and_up_again(databases: DatabaseFactory) -> None:
    url = await databases.create("chain")
    await migrate(url, "head")
    assert await version(url) == "9ddfdd63af30"
    assert await owner_columns(url) == [
        ("assistants", "owner_api_key_hash", "character varying", 64),
        ("sessions", "owner_api_key_hash", "character varying", 64)]
    await fetch(url, "INSERT INTO sessions (id, model, owner_api_key_hash) VALUES "
                     "(gen_random_uuid(), 'm', repeat('a', 64))")

    await migrate(url, "20260201_000006", down=True)
    assert await version(url) == "20260201_000006"
    assert await owner_columns(url) == [
        ("assistants", "owner_api_key", "character varying", 255),
        ("assistants", "owner_api_key_hash", "character varying", 64),
        ("sessions", "owner_api_key", "character varying", 255),
        ("sessions", "owner_api_key_hash", "character varying", 64)]
    rows = await fetch(url, "SELECT owner_api_key, owner_api_key_hash FROM sessions")
    assert [tuple(r) for r in rows] == [(None, "a" * 64)]
    indexes = {r[0]: r[1] for r in await fetch(
        url, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")}
    for table in ("sessions", "assistants"):
        assert indexes[f"idx_{table}_owner_api_key"].endswith("(owner_api_key)")  # not partial
        assert f"idx_{table}_owner_api_key_hash" in indexes
    assert await column_types(url, "metadata") == {"sessions": "jsonb", "assistants": "jsonb"}
    assert (await column_types(url, "created_at"))["sessions"] == "timestamp without time zone"

    await migrate(url, "head")
    assert await version(url) == "9ddfdd63af30"
    assert not await column_types(url, "owner_api_key")  # any key written there is lost
    assert set(await column_types(url, "session_metadata")) == {"sessions"}
    assert set((await column_types(url, "created_at")).values()) == {"timestamp with time zone"}


async def test_phase2_revision_backfills_hashes_from_plaintext(
    databases: DatabaseFactory,
) -> None:
    url = await databases.create("backfill")
    await migrate(url, "20260101_000005")
    await fetch(url, "INSERT INTO sessions (id, model, owner_api_key) VALUES "
                     "(gen_random_uuid(), 'm', 'key-one'), (gen_random_uuid(), 'm', NULL)")
    await fetch(url, "INSERT INTO assistants (id, model, owner_api_key) VALUES ('a1', 'm', 'k2')")
    await migrate(url, "20260201_000006")
    sessions = {r[0]: r[1] for r in await fetch(
        url, "SELECT owner_api_key, owner_api_key_hash FROM sessions")}
    assert sessions == {"key-one": hashlib.sha256(b"key-one").hexdigest(), None: None}
    assistants = await fetch(url, "SELECT owner_api_key_hash FROM assistants")
    assert assistants[0][0] == hashlib.sha256(b"k2").hexdigest()


def alembic_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The service's own command, run from its checkout with DATABASE_URL in the environment."""
    return subprocess.run([ALEMBIC, *args], cwd=SANDBOX_DIR, capture_output=True, text=True,
                          env={**os.environ, "DATABASE_URL": url}, timeout=60, check=False)


async def test_alembic_cli_downgrade_from_the_service_directory(target_db_url: str) -> None:
    plain = alembic_cli(target_db_url, "downgrade", "20260201_000006")
    assert plain.returncode != 0  # like the real service: a plain postgresql:// URL fails
    assert await version(target_db_url) == "9ddfdd63af30"

    done = alembic_cli(asyncpg_url(target_db_url), "downgrade", "20260201_000006")
    assert done.returncode == 0, done.stderr
    assert "Running downgrade 20260208_000007 -> 20260201_000006" in done.stderr
    assert await version(target_db_url) == "20260201_000006"
    counts = await fetch(target_db_url, "SELECT count(*), count(owner_api_key), "
                                        "count(owner_api_key_hash) FROM sessions")
    assert tuple(counts[0]) == (18, 0, 18)  # 6 seeded clients x 3 sessions; plaintext all NULL
