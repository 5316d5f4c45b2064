"""Opening the engine on the bot's database, the same way for every front (Slack, terminal)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
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
    async with open_engines((settings,)) as (engine,):
        yield engine


@asynccontextmanager
async def open_engines(targets: Sequence[Settings]) -> AsyncIterator[tuple[Engine, ...]]:
    """One engine per target, on the one bot database (bot-wide settings are the same in
    every target's): each works on its own target's runs, leases, clicks and rotations, with
    its own settings and its own limits on the target's connections; only the pool of
    connections to the bot database is shared."""
    first = targets[0]
    first.require("database_url")
    assert first.database_url is not None
    url = first.database_url.get_secret_value()
    await ensure_schema(url)
    for settings in targets:
        target_db.configure(settings)
    lease = min(settings.step_lease_seconds for settings in targets)
    db = make_engine(url, stalled_transaction_after=stalled_transaction_seconds(lease))
    sessions = make_sessionmaker(db)
    replica = f"replica-{uuid.uuid4().hex[:8]}"
    engines = tuple(
        Engine(sessions, settings, default_steps(),
               replica_id=replica if len(targets) == 1 else f"{replica}-{settings.target_name}")
        for settings in targets)
    try:
        yield engines
    finally:
        for engine in engines:
            await engine.shutdown()
        await db.dispose()
