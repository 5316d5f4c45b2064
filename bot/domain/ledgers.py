"""What the key and email steps remember in the bot's own database, seen through narrow interfaces.

The rotation map holds old hash -> new hash (never a key). The notification ledger holds one row
per rotation and client, so a client is never emailed twice, even across re-runs.

Both are keyed by the ROTATION, not by the run: a rotation belongs to the target. Its id is the
run that began it (step 4 started); a later run that finds it still open — the run was aborted
or rejected before step 5 was done — continues it (`StepContext.rotation_id`): the same keys,
and only the clients not yet mailed are mailed. Step 5 done closes it for good; a run after that
has its own rotation, and finds what the closed one did through `RotationLedger.last_closed`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from bot.domain.steps import StepName

# A run whose step 4 has started has a rotation (its own, or the one it continues); step 5 done
# closes it: every owned row carries its client's key and every client was mailed, or recorded
# as without a contact, or as uncertain (for the by-hand check, never re-sent).
OPENS_ROTATION = StepName.ROTATE_KEYS
CLOSES_ROTATION = StepName.EMAIL_CLIENTS


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

    def pages(self, run_id: str, size: int) -> AsyncIterator[dict[str, str]]:
        """The mapping a page of at most `size` pairs at a time, in old-hash order: a million
        clients' pairs are never in memory at once (step 4 at 12 M rows)."""
        ...

    async def count(self, run_id: str) -> int: ...

    async def forget(self, run_id: str, old_hashes: Iterable[str]) -> None: ...

    async def last_closed(self) -> ClosedRotationRecord | None:
        """The latest closed rotation that keyed any client (the empty rotation of a run that
        found nothing left to key does not count), or None when there never was one."""
        ...


class NotificationLedger(Protocol):
    async def records(self, run_id: str) -> dict[str, NotificationRecord]: ...

    async def statuses(self, run_id: str, client_hashes: Sequence[str]
                       ) -> dict[str, NotificationStatus]:
        """The status of those clients that have a record: for one page of the rotation
        ledger at a time (a million clients' records are never in memory at once)."""
        ...

    async def save(self, run_id: str, *records: NotificationRecord) -> None:
        """Stores the records in one transaction (the latest per client wins)."""
        ...


@dataclass(frozen=True)
class RotationProgress:
    """How far a rotation got, from its two ledgers."""

    keyed: int  # clients given a new key (old hash -> new hash recorded)
    mailed: int
    no_contact: int = 0
    uncertain: int = 0  # `sending` when the bot stopped: maybe delivered, never re-sent

    @property
    def not_mailed(self) -> int:
        return max(self.keyed - self.mailed - self.no_contact - self.uncertain, 0)


@dataclass(frozen=True)
class ClosedRotationRecord:
    """A rotation that is over, as `closed_rotations` recorded it when step 5 was done."""

    rotation_id: str  # the run that began it
    closed_in_run: str  # the run whose step 5 was done
    closed_at: datetime
    progress: RotationProgress  # the counts at closure


def add_progress(progress: RotationProgress, keyed: int,
                 statuses: Iterable[NotificationStatus]) -> RotationProgress:
    """`progress` and one more page of the rotation: `keyed` clients, these statuses."""
    counted = list(statuses)
    return RotationProgress(
        keyed=progress.keyed + keyed,
        mailed=progress.mailed + counted.count(NotificationStatus.SENT),
        no_contact=progress.no_contact + counted.count(NotificationStatus.NO_CONTACT),
        uncertain=progress.uncertain + counted.count(NotificationStatus.SENDING))


def rotation_progress(mapping: Mapping[str, str],
                      records: Mapping[str, NotificationRecord]) -> RotationProgress:
    status = [records[old].status for old in mapping if old in records]
    return RotationProgress(
        keyed=len(mapping), mailed=status.count(NotificationStatus.SENT),
        no_contact=status.count(NotificationStatus.NO_CONTACT),
        uncertain=status.count(NotificationStatus.SENDING))


def continuing_line(rotation_id: str, progress: RotationProgress) -> str:
    """What a plan says when its run continues an earlier run's rotation."""
    return (f"continuing the rotation of run {rotation_id[:8]}: {progress.keyed:,} clients "
            f"keyed, {progress.mailed:,} mailed")


def closed_line(closed: ClosedRotationRecord) -> str:
    """What step 5 says in a run whose own rotation is empty because an earlier one is over."""
    p = closed.progress
    by = ("" if closed.closed_in_run == closed.rotation_id
          else f" by run {closed.closed_in_run[:8]}")
    more = "".join(f", {n:,} {what}" for n, what in ((p.no_contact, "without a contact"),
                                                      (p.uncertain, "uncertain")) if n)
    when = f"{closed.closed_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    return (f"every client was already keyed and mailed by the rotation of run "
            f"{closed.rotation_id[:8]} (closed at {when}{by}, {p.keyed:,} keyed, "
            f"{p.mailed:,} mailed{more}); nothing is left to mail")
