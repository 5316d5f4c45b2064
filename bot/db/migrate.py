"""Bring the bot's database to the latest schema, from code (works from an installed package)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from bot.urls import libpq_url, password_of

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


async def current_revision(url: str) -> str | None:
    conn = await asyncpg.connect(libpq_url(url), password=password_of(url))
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL")
        return await conn.fetchval("SELECT version_num FROM alembic_version") if exists else None
    finally:
        await conn.close()


async def upgrade_to_head(url: str) -> str:
    """Idempotent: a database already at head is left as it is."""
    # env.py runs its own event loop; keep it off ours.
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
    return head_revision()


async def downgrade_to_base(url: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(url), "base")
