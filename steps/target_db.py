"""Small read-only questions asked of the target database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from bot.urls import libpq_url, password_of
from steps.target_sql import (
    ALEMBIC_REVISIONS_SQL,
    ALEMBIC_TABLE_EXISTS_SQL,
    COLUMN_EXISTS_SQL,
    DATABASE_SIZE_SQL,
    SERVER_VERSION_NUM_SQL,
)


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(libpq_url(url), password=password_of(url), timeout=15)
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


def pretty_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
