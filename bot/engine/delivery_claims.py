"""A delivery to the outside world (a page, a thread notice) without a transaction open.

The old way held a transaction (and an advisory lock) around the outside call; a slow PagerDuty
or a storm of Slack 429s outlasted the server's `idle_in_transaction_session_timeout`, the
session was killed with the delivery's record, and the next pass sent it again. Now:

1. claim: a `delivery_claims` row with an expiry, in its own committed transaction;
2. send, with no transaction open, while a heartbeat renews the claim every third of its lease
   (a live replica keeps it however slow the upstream is);
3. record: `event_deliveries` written and the claim removed, in one short transaction.

A claim lapses only when its replica died or stalled, or when the call failed (it may still
have been applied). The next taker sees `retaken` and examines what went out before sending:
the caller decides how (PagerDuty's dedup_key makes a resent trigger harmless; a Slack notice
is looked up by its message metadata).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_deliveries, repo_delivery_claims
from bot.db.repo_deliveries import Target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claimed:
    event_id: int
    target: Target
    takes: int

    @property
    def retaken(self) -> bool:
        """An earlier claim lapsed unrecorded: what it sent may be out already."""
        return self.takes > 1


class DeliveryClaims:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], owner: str,
                 lease_seconds: float) -> None:
        self.sessions = sessions
        self.owner = owner
        self.lease = lease_seconds

    @contextlib.asynccontextmanager
    async def held(self, event_id: int, target: Target) -> AsyncIterator[Claimed | None]:
        """The claim for the body's outside calls (None: delivered, or another holds it).
        If the body fails, the claim lapses at once for the next pass to examine."""
        async with self.sessions() as session, session.begin():
            takes = await repo_delivery_claims.take(session, event_id, target.value, self.owner,
                                                    self.lease)
        if takes is None:
            yield None
            return
        claimed = Claimed(event_id, target, takes)
        heartbeat = asyncio.create_task(self._renew_while_sending(claimed))
        try:
            yield claimed
        except BaseException:
            heartbeat.cancel()
            with contextlib.suppress(SQLAlchemyError, OSError, TimeoutError):
                async with asyncio.timeout(5), self.sessions() as session, session.begin():
                    await repo_delivery_claims.lapse(session, event_id, target.value,
                                                     self.owner)
            raise
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def still_mine(self, session: AsyncSession, claimed: Claimed) -> bool:
        """In the caller's transaction, before it logs an outcome: the claim is still ours
        (its row locked until that transaction ends, so no taker slips in between)."""
        return await repo_delivery_claims.still_mine(session, claimed.event_id,
                                                     claimed.target.value, self.owner)

    async def record(self, claimed: Claimed, run_id: str, detail: dict[str, Any]) -> None:
        async with self.sessions() as session, session.begin():
            await repo_deliveries.record(session, claimed.event_id, run_id, claimed.target,
                                         detail)
            await repo_delivery_claims.finish(session, claimed.event_id, claimed.target.value)

    async def _renew_while_sending(self, claimed: Claimed) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                async with self.sessions() as session, session.begin():
                    kept = await repo_delivery_claims.renew(
                        session, claimed.event_id, claimed.target.value, self.owner, self.lease)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("could not renew the claim on delivery %s to %s: %s",
                            claimed.event_id, claimed.target.value, exc)
                continue
            if not kept:
                log.warning("the claim on delivery %s to %s lapsed to another replica",
                            claimed.event_id, claimed.target.value)
                return
