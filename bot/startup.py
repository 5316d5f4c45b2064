"""Opening the engine on the bot's database, the same way for every front (Slack, terminal)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.db.migrate import current_revision, head_revision
from bot.db.session import make_engine, make_sessionmaker, stalled_transaction_seconds
from bot.engine.engine import Engine
from bot.settings import Settings, SettingsError
from steps import target_db
from steps.registry import default_steps


async def ensure_schema(database_url: str) -> None:
    current, head = await current_revision(database_url), head_revision()
    if current != head:
        raise SettingsError(
            f"the bot database is at revision {current or 'none'}, not {head}: "
            "run `rollback-bot migrate` first"
        )


@asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[Engine]:
    """The engine with the six real steps; refuses a bot database that is not migrated."""
    settings.require("database_url")
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    await ensure_schema(url)
    target_db.configure(settings)
    db = make_engine(url, stalled_transaction_after=stalled_transaction_seconds(
        settings.step_lease_seconds))
    engine = Engine(make_sessionmaker(db), settings, default_steps())
    try:
        yield engine
    finally:
        await engine.shutdown()
        await db.dispose()
