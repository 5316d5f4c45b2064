"""The bot database's async engine (asyncpg) and session factory."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from bot.urls import sqlalchemy_url

# Slack calls made inside a transaction (the first post of a step message holds its row, so
# that no second copy is posted) may legitimately keep one open for a few seconds.
MIN_STALLED_TRANSACTION_SECONDS = 10.0


def stalled_transaction_seconds(lease_seconds: float) -> float:
    """How long one of our transactions may sit idle before the server ends it.

    A replica that stalls mid-transaction (its event loop stuck, its network partitioned, the
    bot database unreachable from it only) keeps the row locks it took: a lease renewal holds
    its step's row, and the replica that must take the step over would wait on that lock for
    as long as the stalled TCP connection lives — tens of minutes. Past a lease, such a holder
    cannot be relying on its lease any more (its step was stopped at two thirds of it), so the
    server ends its session and the locks go with it."""
    return max(lease_seconds, MIN_STALLED_TRANSACTION_SECONDS)


def make_engine(url: str, pool_size: int = 10,
                stalled_transaction_after: float | None = None) -> AsyncEngine:
    """`stalled_transaction_after`: seconds after which the server ends a session left idle
    inside a transaction (`idle_in_transaction_session_timeout`); None leaves the server's."""
    server_settings = {} if stalled_transaction_after is None else {
        "idle_in_transaction_session_timeout": str(round(stalled_transaction_after * 1000))}
    return create_async_engine(sqlalchemy_url(url), pool_size=pool_size, max_overflow=40,
                               pool_pre_ping=True,
                               connect_args={"server_settings": server_settings})


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
