"""Ledgers kept in memory: for dry runs (`plan`) where nothing may be written anywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

from bot.domain.ledgers import ClosedRotationRecord, NotificationRecord, NotificationStatus


class MemoryRotationLedger:
    """`closed`: the rotations already over, e.g. read from the bot database for a dry run."""

    def __init__(self, closed: Iterable[ClosedRotationRecord] = ()) -> None:
        self._maps: dict[str, dict[str, str]] = {}
        self._closed = list(closed)

    async def record(self, run_id: str, old_to_new: Mapping[str, str]) -> None:
        self._maps.setdefault(run_id, {}).update(old_to_new)

    async def mapping(self, run_id: str) -> dict[str, str]:
        return dict(self._maps.get(run_id, {}))

    async def pages(self, run_id: str, size: int) -> AsyncIterator[dict[str, str]]:
        pairs = sorted(self._maps.get(run_id, {}).items())
        for first in range(0, len(pairs), size):
            yield dict(pairs[first:first + size])

    async def count(self, run_id: str) -> int:
        return len(self._maps.get(run_id, {}))

    async def forget(self, run_id: str, old_hashes: Iterable[str]) -> None:
        for old in old_hashes:
            self._maps.get(run_id, {}).pop(old, None)

    async def last_closed(self) -> ClosedRotationRecord | None:
        return max((c for c in self._closed if c.progress.keyed), key=lambda c: c.closed_at,
                   default=None)


class MemoryNotificationLedger:
    def __init__(self) -> None:
        self._records: dict[str, dict[str, NotificationRecord]] = {}

    async def records(self, run_id: str) -> dict[str, NotificationRecord]:
        return dict(self._records.get(run_id, {}))

    async def statuses(self, run_id: str, client_hashes: Sequence[str]
                       ) -> dict[str, NotificationStatus]:
        records = self._records.get(run_id, {})
        return {h: records[h].status for h in client_hashes if h in records}

    async def save(self, run_id: str, *records: NotificationRecord) -> None:
        for record in records:
            self._save(run_id, record)

    def _save(self, run_id: str, record: NotificationRecord) -> None:
        self._records.setdefault(run_id, {})[record.client_hash] = record
