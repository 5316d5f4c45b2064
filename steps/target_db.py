"""Small read-only questions asked of the target database, and the one way to connect to it.

Each is a probe that a step and `rollback-bot check` both ask: one function per fact, so the
preflight can never disagree with the rollback about what the target looks like.

Every connection carries a lock timeout and a statement timeout, so a held lock or a stuck
query on the production target fails a plan, a check or a step with a clear error instead of
hanging it (`TARGET_LOCK_TIMEOUT_SECONDS`, `TARGET_STATEMENT_TIMEOUT_SECONDS`; `configure`
applies a target's settings at startup). One process may serve several targets, each with its
own limits: they are kept by the target's database URL, which `connect` is always given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from bot.domain.plan_parts import TARGET, plan_part
from bot.settings import Settings
from bot.urls import libpq_url, password_of
from steps.target_sql import (
    ALEMBIC_REVISIONS_SQL,
    ALEMBIC_TABLE_EXISTS_SQL,
    COLUMN_EXISTS_SQL,
    DATABASE_SIZE_SQL,
    OWNER_HASHES_SQL,
    PENDING_CLIENT_COUNT_SQL,
    SERVER_VERSION_NUM_SQL,
    WORK_SCHEMA_PRIVILEGE_SQL,
)

CONNECT_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class TargetLimits:
    lock_timeout_seconds: float = 5.0
    statement_timeout_seconds: float = 900.0

    def server_settings(self) -> dict[str, str]:
        return {"lock_timeout": f"{int(self.lock_timeout_seconds * 1000)}ms",
                "statement_timeout": f"{int(self.statement_timeout_seconds * 1000)}ms"}


DEFAULT_LIMITS = TargetLimits()
_LIMITS: dict[str, TargetLimits] = {}  # a target's database URL -> its limits


def configure(settings: Settings) -> None:
    """The limits of the target `settings` are for, on every connection to its database."""
    _LIMITS[settings.target_database_url.get_secret_value()] = TargetLimits(
        settings.target_lock_timeout_seconds, settings.target_statement_timeout_seconds)


def limits_for(url: str) -> TargetLimits:
    """The limits configured for the target at `url` (the defaults for one not configured)."""
    return _LIMITS.get(url, DEFAULT_LIMITS)


@asynccontextmanager
async def connect(url: str, connect_seconds: float = CONNECT_TIMEOUT_SECONDS
                  ) -> AsyncIterator[asyncpg.Connection]:
    with plan_part(TARGET, target=True):  # a plan out of time here: "target busy"
        conn = await asyncpg.connect(libpq_url(url), password=password_of(url),
                                     timeout=connect_seconds,
                                     server_settings=limits_for(url).server_settings())
        try:
            yield conn
        finally:
            await conn.close()


async def alembic_revision(url: str) -> str | None:
    """The revision stamped in `alembic_version`, or None when there is no such table."""
    async with connect(url) as conn:
        return await revision_on(conn)


async def revision_on(conn: asyncpg.Connection) -> str | None:
    """`alembic_revision` on a connection already open (several heads joined by commas)."""
    if not await conn.fetchval(ALEMBIC_TABLE_EXISTS_SQL):
        return None
    rows = await conn.fetch(ALEMBIC_REVISIONS_SQL)
    return ",".join(sorted(r["version_num"] for r in rows)) or None


async def server_version_major(url: str) -> int:
    async with connect(url) as conn:
        return await server_major_on(conn)


async def server_major_on(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(SERVER_VERSION_NUM_SQL)) // 10000


async def database_size(url: str) -> int:
    async with connect(url) as conn:
        return int(await conn.fetchval(DATABASE_SIZE_SQL))


async def column_exists(url: str, table: str, column: str) -> bool:
    async with connect(url) as conn:
        return bool(await conn.fetchval(COLUMN_EXISTS_SQL, table, column))


async def owner_hashes(url: str) -> set[str]:
    """Every hash that owns a session or an assistant: the clients as the target knows them."""
    async with connect(url) as conn:
        return await owner_hashes_on(conn)


async def owner_hashes_on(conn: asyncpg.Connection) -> set[str]:
    return {r["hash"] for r in await conn.fetch(OWNER_HASHES_SQL)}


async def clients_without_key(url: str) -> int | None:
    """How many clients still own rows without a new key (step 4's work left); None before the
    downgrade, when there is no owner_api_key column yet: every client is still to be keyed."""
    async with connect(url) as conn:
        try:
            return int(await conn.fetchval(PENDING_CLIENT_COUNT_SQL))
        except asyncpg.UndefinedColumnError:
            return None


@dataclass(frozen=True)
class SchemaPrivilege:
    user: str
    database: str
    allowed: bool  # may create the schema, or create in it when it already exists


async def schema_privilege_on(conn: asyncpg.Connection, schema: str) -> SchemaPrivilege:
    """Whether this connection's user may make a table in `schema` (creating it if need be)."""
    row = await conn.fetchrow(WORK_SCHEMA_PRIVILEGE_SQL, schema)
    assert row is not None
    return SchemaPrivilege(row["user_name"], row["database_name"], bool(row["allowed"]))


def pretty_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
