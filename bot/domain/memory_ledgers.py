"""Ledgers kept in memory: for dry runs (`plan`) where nothing may be written anywhere."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bot.domain.ledgers import NotificationRecord


class MemoryRotationLedger:
    def __init__(self) -> None:
        self._maps: dict[str, dict[str, str]] = {}

    async def record(self, run_id: str, old_to_new: Mapping[str, str]) -> None:
        self._maps.setdefault(run_id, {}).update(old_to_new)

    async def mapping(self, run_id: str) -> dict[str, str]:
        return dict(self._maps.get(run_id, {}))

    async def forget(self, run_id: str, old_hashes: Iterable[str]) -> None:
        for old in old_hashes:
            self._maps.get(run_id, {}).pop(old, None)


class MemoryNotificationLedger:
    def __init__(self) -> None:
        self._records: dict[str, dict[str, NotificationRecord]] = {}

    async def records(self, run_id: str) -> dict[str, NotificationRecord]:
        return dict(self._records.get(run_id, {}))

    async def save(self, run_id: str, *records: NotificationRecord) -> None:
        for record in records:
            self._save(run_id, record)

    def _save(self, run_id: str, record: NotificationRecord) -> None:
        self._records.setdefault(run_id, {})[record.client_hash] = record
