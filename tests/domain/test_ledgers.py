"""What step 5 says after a closed rotation, and which closed rotation it names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bot.domain.ledgers import ClosedRotationRecord, RotationProgress, closed_line
from bot.domain.memory_ledgers import MemoryRotationLedger

FIRST = "1111111a-0000-0000-0000-000000000000"
SECOND = "2222222b-0000-0000-0000-000000000000"
AT = datetime(2026, 12, 3, 3, 14, tzinfo=UTC)


def closed(rotation: str, closed_in: str, progress: RotationProgress,
           at: datetime = AT) -> ClosedRotationRecord:
    return ClosedRotationRecord(rotation, closed_in, at, progress)


@pytest.mark.parametrize(("record", "says"), [
    (closed(FIRST, FIRST, RotationProgress(keyed=6, mailed=6)),
     "by the rotation of run 1111111a (closed at 2026-12-03 03:14 UTC, 6 keyed, 6 mailed); "
     "nothing is left to mail"),
    (closed(FIRST, SECOND, RotationProgress(keyed=1200, mailed=1100, no_contact=98,
                                            uncertain=2),
            AT.astimezone(timezone(timedelta(hours=-5)))),
     "by the rotation of run 1111111a (closed at 2026-12-03 03:14 UTC by run 2222222b, "
     "1,200 keyed, 1,100 mailed, 98 without a contact, 2 uncertain); nothing is left to mail"),
])
def test_the_line_names_the_rotation_its_closing_run_time_and_counts(
    record: ClosedRotationRecord, says: str,
) -> None:
    assert closed_line(record) == f"every client was already keyed and mailed {says}"


async def test_the_last_closed_rotation_that_keyed_anyone_is_the_one_named() -> None:
    keyed = closed(FIRST, FIRST, RotationProgress(keyed=6, mailed=5, no_contact=1))
    empty_later = closed(SECOND, SECOND, RotationProgress(keyed=0, mailed=0),
                         AT + timedelta(days=1))
    assert await MemoryRotationLedger([keyed, empty_later]).last_closed() == keyed
    assert await MemoryRotationLedger([empty_later]).last_closed() is None
    assert await MemoryRotationLedger().last_closed() is None
