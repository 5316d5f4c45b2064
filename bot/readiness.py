"""Whether this `serve` should be sent Slack's requests: the answer of `GET /ready`.

Not ready while draining (SIGTERM received: a load balancer stops sending before the listener
closes) or while the bot database's schema is not the code's alembic head (a replica of newer
code started before `rollback-bot migrate`, or an older one after it), or unreachable. `/health`
is liveness only: a replica that is not ready is still alive and must not be restarted for it.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.migrate import head_revision

SCHEMA_CHECK_SECONDS = 2.0


class Readiness:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.head = head_revision()
        self.draining = False

    async def refusal(self) -> str | None:
        """Why not ready, or None."""
        if self.draining:
            return "draining: shutting down"
        try:
            async with asyncio.timeout(SCHEMA_CHECK_SECONDS), self.sessions() as session:
                current = (await session.execute(
                    text("SELECT version_num FROM alembic_version"))).scalar()
        except Exception as exc:  # unreachable, or no alembic_version at all
            return f"bot database not readable: {type(exc).__name__}"
        if current != self.head:
            return f"bot database schema at {current or 'none'}, the code's head is {self.head}"
        return None
