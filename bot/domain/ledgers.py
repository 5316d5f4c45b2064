"""What the key and email steps remember in the bot's own database, seen through narrow interfaces.

The rotation map holds old hash -> new hash (never a key). The notification ledger holds one row
per run and client, so a client is never emailed twice for one run, even across re-runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class NotificationStatus(StrEnum):
    SENDING = "sending"  # handed to the mailer; if the bot dies now, delivery is uncertain
    SENT = "sent"
    FAILED = "failed"
    NO_CONTACT = "no_contact"


@dataclass(frozen=True)
class NotificationRecord:
    client_hash: str  # the client's OLD key hash: the identity the directory knows
    status: NotificationStatus
    email: str | None = None
    attempts: int = 0
    error: str | None = None


class RotationLedger(Protocol):
    async def record(self, run_id: str, old_to_new: Mapping[str, str]) -> None: ...

    async def mapping(self, run_id: str) -> dict[str, str]: ...

    async def forget(self, run_id: str, old_hashes: Iterable[str]) -> None: ...


class NotificationLedger(Protocol):
    async def records(self, run_id: str) -> dict[str, NotificationRecord]: ...

    async def save(self, run_id: str, *records: NotificationRecord) -> None:
        """Stores the records in one transaction (the latest per client wins)."""
        ...
