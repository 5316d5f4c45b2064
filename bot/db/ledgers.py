"""SQL implementations of the ledgers the key and email steps use.

Unlike the repositories, each call is its own short transaction: steps call them between
operations on the target, and each record must be durable before the step goes on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import KeyRotation, Notification
from bot.domain.ledgers import NotificationRecord, NotificationStatus


def _notification_upsert() -> Any:
    """Built once: `excluded` makes a new alias with its column collection on every call, which
    cost more than the round trip when built per email."""
    statement = insert(Notification)
    return statement.on_conflict_do_update(
        index_elements=[Notification.run_id, Notification.client_hash],
        set_={**{k: statement.excluded[k] for k in ("email", "status", "attempts", "error")},
              "updated_at": func.now()},
    )


NOTIFICATION_UPSERT = _notification_upsert()


class SqlRotationLedger:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def record(self, run_id: str, old_to_new: Mapping[str, str]) -> None:
        if not old_to_new:
            return
        rows = [{"run_id": uuid.UUID(run_id), "old_hash": old, "new_hash": new}
                for old, new in old_to_new.items()]
        async with self.sessions() as session, session.begin():
            statement = insert(KeyRotation).values(rows)
            await session.execute(statement.on_conflict_do_update(
                index_elements=[KeyRotation.run_id, KeyRotation.old_hash],
                set_={"new_hash": statement.excluded.new_hash, "rotated_at": func.now()},
            ))

    async def mapping(self, run_id: str) -> dict[str, str]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(KeyRotation.old_hash, KeyRotation.new_hash)
                .where(KeyRotation.run_id == uuid.UUID(run_id))
            )
            return {row.old_hash: row.new_hash for row in rows}

    async def forget(self, run_id: str, old_hashes: Iterable[str]) -> None:
        hashes = list(old_hashes)
        if not hashes:
            return
        async with self.sessions() as session, session.begin():
            await session.execute(delete(KeyRotation).where(
                KeyRotation.run_id == uuid.UUID(run_id), KeyRotation.old_hash.in_(hashes)
            ))


class SqlNotificationLedger:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def records(self, run_id: str) -> dict[str, NotificationRecord]:
        async with self.sessions() as session:
            rows = (await session.execute(
                select(Notification).where(Notification.run_id == uuid.UUID(run_id))
            )).scalars()
            return {
                row.client_hash: NotificationRecord(
                    client_hash=row.client_hash, status=NotificationStatus(row.status),
                    email=row.email, attempts=row.attempts, error=row.error,
                )
                for row in rows
            }

    async def save(self, run_id: str, *records: NotificationRecord) -> None:
        latest = {record.client_hash: record for record in records}  # one row per client
        if not latest:
            return
        values = [{"run_id": uuid.UUID(run_id), "client_hash": record.client_hash,
                   "email": record.email, "status": record.status.value,
                   "attempts": record.attempts, "error": record.error}
                  for record in latest.values()]
        # One statement is atomic by itself: autocommit spares a BEGIN and a COMMIT round trip
        # per email.
        async with self.sessions() as session:
            conn = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            await conn.execute(NOTIFICATION_UPSERT, values)
