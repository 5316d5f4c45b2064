"""SQL implementations of the ledgers the key and email steps use.

Unlike the repositories, each call is its own short transaction: steps call them between
operations on the target, and each record must be durable before the step goes on.

A ledger handed to a step execution carries a `Fence`: each write is made only while that
execution is still running under this replica's lease (checked in the same statement or
transaction, under a share lock on the execution's row, so a takeover waits for the write or the
write sees the takeover). A refused write raises `LeaseLost`: the step stops.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_rotations
from bot.db.models import KeyRotation, Notification
from bot.domain.ledgers import ClosedRotationRecord, NotificationRecord, NotificationStatus
from bot.domain.step_protocol import LeaseLost


@dataclass(frozen=True)
class Fence:
    """The execution a ledger writes for, and the replica that must hold its lease."""

    execution_id: str
    owner: str

    def params(self) -> dict[str, Any]:
        return {"fence_execution": uuid.UUID(self.execution_id), "fence_owner": self.owner}


HELD = ("EXISTS (SELECT 1 FROM step_executions WHERE id = :fence_execution"
        " AND lease_owner = :fence_owner AND status = 'running' FOR SHARE)")


async def _check_fence(session: AsyncSession, fence: Fence | None) -> None:
    if fence is not None and not (await session.execute(
            text(f"SELECT {HELD}"), fence.params())).scalar():
        raise LeaseLost("this replica no longer holds the step's lease: it stopped writing")


# One statement, fenced: the rows are written only while the execution holds its lease.
FENCED_NOTIFICATION_UPSERT = text(f"""
INSERT INTO notifications (run_id, client_hash, email, status, attempts, error)
SELECT :run_id, v.client_hash, v.email, v.status, v.attempts, v.error
FROM unnest(CAST(:hashes AS text[]), CAST(:emails AS text[]), CAST(:statuses AS text[]),
            CAST(:attempts AS int[]), CAST(:errors AS text[]))
     AS v(client_hash, email, status, attempts, error)
WHERE {HELD}
ON CONFLICT (run_id, client_hash) DO UPDATE SET email = excluded.email,
    status = excluded.status, attempts = excluded.attempts, error = excluded.error,
    updated_at = now()
RETURNING client_hash
""")


# Fenced by the caller's transaction (`_check_fence`); a pair already there unchanged is left
# alone, so a resume that streams every pair again writes only what moved.
ROTATION_UPSERT = text("""
INSERT INTO key_rotations (run_id, old_hash, new_hash)
SELECT :run_id, p.old_hash, p.new_hash
FROM unnest(CAST(:olds AS text[]), CAST(:news AS text[])) AS p(old_hash, new_hash)
ON CONFLICT (run_id, old_hash) DO UPDATE SET new_hash = excluded.new_hash, rotated_at = now()
WHERE key_rotations.new_hash IS DISTINCT FROM excluded.new_hash
""")


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
    def __init__(self, sessions: async_sessionmaker[AsyncSession],
                 fence: Fence | None = None, target: str | None = None) -> None:
        self.sessions = sessions
        self.fence = fence
        self.target = target  # whose closed rotations count (None: any target's)

    async def record(self, run_id: str, old_to_new: Mapping[str, str]) -> None:
        """One statement over two arrays (a VALUES list of 5,000 rows cost more to build in
        SQLAlchemy than to write); a pair already recorded as it is stays untouched."""
        if not old_to_new:
            return
        async with self.sessions() as session, session.begin():
            await _check_fence(session, self.fence)
            await session.execute(ROTATION_UPSERT, {
                "run_id": uuid.UUID(run_id), "olds": list(old_to_new),
                "news": list(old_to_new.values())})

    async def mapping(self, run_id: str) -> dict[str, str]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(KeyRotation.old_hash, KeyRotation.new_hash)
                .where(KeyRotation.run_id == uuid.UUID(run_id))
            )
            return {row.old_hash: row.new_hash for row in rows}

    async def pages(self, run_id: str, size: int) -> AsyncIterator[dict[str, str]]:
        """Keyset pages along the primary key: each page one short query, no transaction held
        open between pages (the step writes the target meanwhile)."""
        after = ""
        while True:
            async with self.sessions() as session:
                rows = (await session.execute(
                    select(KeyRotation.old_hash, KeyRotation.new_hash)
                    .where(KeyRotation.run_id == uuid.UUID(run_id),
                           KeyRotation.old_hash > after)
                    .order_by(KeyRotation.old_hash).limit(size))).all()
            if not rows:
                return
            yield {row.old_hash: row.new_hash for row in rows}
            if len(rows) < size:
                return
            after = rows[-1].old_hash

    async def count(self, run_id: str) -> int:
        async with self.sessions() as session:
            return int((await session.execute(
                select(func.count()).select_from(KeyRotation)
                .where(KeyRotation.run_id == uuid.UUID(run_id)))).scalar_one())

    async def forget(self, run_id: str, old_hashes: Iterable[str]) -> None:
        hashes = list(old_hashes)
        if not hashes:
            return
        async with self.sessions() as session, session.begin():
            await _check_fence(session, self.fence)
            await session.execute(delete(KeyRotation).where(
                KeyRotation.run_id == uuid.UUID(run_id), KeyRotation.old_hash.in_(hashes)
            ))

    async def last_closed(self) -> ClosedRotationRecord | None:
        async with self.sessions() as session:
            return await repo_rotations.last_closed(session, self.target)


class SqlNotificationLedger:
    def __init__(self, sessions: async_sessionmaker[AsyncSession],
                 fence: Fence | None = None) -> None:
        self.sessions = sessions
        self.fence = fence

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

    async def statuses(self, run_id: str, client_hashes: Sequence[str]
                       ) -> dict[str, NotificationStatus]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(Notification.client_hash, Notification.status)
                .where(Notification.run_id == uuid.UUID(run_id),
                       Notification.client_hash.in_(list(client_hashes))))
            return {row.client_hash: NotificationStatus(row.status) for row in rows}

    async def save(self, run_id: str, *records: NotificationRecord) -> None:
        latest = {record.client_hash: record for record in records}  # one row per client
        if not latest:
            return
        if self.fence is not None:
            await self._save_fenced(run_id, list(latest.values()), self.fence)
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

    async def _save_fenced(
        self, run_id: str, records: list[NotificationRecord], fence: Fence
    ) -> None:
        params = {"run_id": uuid.UUID(run_id), **fence.params(),
                  "hashes": [r.client_hash for r in records], "emails": [r.email for r in records],
                  "statuses": [r.status.value for r in records],
                  "attempts": [r.attempts for r in records], "errors": [r.error for r in records]}
        async with self.sessions() as session:
            conn = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            written = (await conn.execute(FENCED_NOTIFICATION_UPSERT, params)).all()
        if not written:
            raise LeaseLost("this replica no longer holds the step's lease: no email is "
                            "marked or recorded on its behalf")
