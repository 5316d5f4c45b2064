"""One thread writer per run: the replica holding a run's claim in the bot database writes its
thread; the others leave it alone and take over when that claim lapses (its replica died).

The claim is a lease in database time, renewed every third of its length by a heartbeat that
keeps running while a write waits on Slack, and confirmed again in the database right before
every write, so a replica that lost its claim (a stalled event loop, a bot-DB outage longer
than the lease) stops before writing anything more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_mirror

log = logging.getLogger(__name__)


class ClaimLost(Exception):
    """Another replica writes this run's thread now."""


class ThreadClaims:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], owner: str,
                 ttl_seconds: float) -> None:
        self.sessions = sessions
        self.owner = owner
        self.ttl = ttl_seconds
        self.held: set[str] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    async def hold(self, run_id: str) -> bool:
        """Take or keep `run_id`'s claim. False: another replica holds it (or the database
        cannot say, which is the same for a writer: do not write)."""
        try:
            async with self.sessions() as session, session.begin():
                mine = await repo_mirror.claim(session, run_id, self.owner, self.ttl)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not claim the thread of run %s: %s", run_id, exc)
            mine = False
        if mine:
            self.held.add(run_id)
        else:
            self.held.discard(run_id)
        return mine

    def newly_held(self, run_id: str, before: set[str]) -> bool:
        return run_id in self.held and run_id not in before

    async def confirm(self, run_id: str) -> None:
        """Right before a write: still ours, in the database's own time, or ClaimLost."""
        async with self.sessions() as session, session.begin():
            kept = await repo_mirror.renew(session, self.owner, [run_id], self.ttl)
        if run_id not in kept:
            self.held.discard(run_id)
            raise ClaimLost(run_id)

    async def candidates(self) -> list[str]:
        """Runs whose thread we hold or could take."""
        try:
            async with self.sessions() as session:
                return await repo_mirror.runs_to_mirror(session, self.owner)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not list the threads to mirror: %s", exc)
            return []

    async def done(self, run_id: str) -> None:
        async with self.sessions() as session, session.begin():
            await repo_mirror.mark_done(session, run_id, self.owner)

    def start(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._renew_forever())

    async def stop(self) -> None:
        """Stop renewing and give every claim up, so another replica takes over at once."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        held, self.held = set(self.held), set()
        if held:
            with contextlib.suppress(SQLAlchemyError, OSError, TimeoutError):
                async with asyncio.timeout(5), self.sessions() as session, session.begin():
                    await repo_mirror.release(session, self.owner, held)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            if not self.held:
                continue
            try:
                async with self.sessions() as session, session.begin():
                    kept = await repo_mirror.renew(session, self.owner, self.held, self.ttl)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("could not renew thread claims: %s", exc)
                continue
            lost = self.held - kept
            if lost:
                log.warning("lost the thread claim of %s to another replica", sorted(lost))
            self.held &= kept
