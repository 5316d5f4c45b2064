"""Small read-only questions asked of the target database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from bot.urls import libpq_url, password_of


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
        if not await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"):
            return None
        rows = await conn.fetch("SELECT version_num FROM alembic_version")
        return ",".join(sorted(r["version_num"] for r in rows)) or None


async def server_version_major(url: str) -> int:
    async with connect(url) as conn:
        return int(await conn.fetchval("SHOW server_version_num")) // 10000


async def database_size(url: str) -> int:
    async with connect(url) as conn:
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))


async def column_exists(url: str, table: str, column: str) -> bool:
    async with connect(url) as conn:
        return bool(await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema ="
            " current_schema() AND table_name = $1 AND column_name = $2)", table, column))


def pretty_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
