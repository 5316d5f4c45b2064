"""The plan's rehearsal lines and warnings, by a table of cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.rehearsal import Rehearsal, RehearsedStep, rehearsal_report
from bot.domain.steps import StepName

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def rehearsal(days_ago: float = 2, code: str | None = "1.0+abc",
              migration: str | None = "9ddfdd63af30") -> Rehearsal:
    end = NOW - timedelta(days=days_ago)
    return Rehearsal("staging", "0123456789abcdef", "carol", "completed", end - timedelta(
        minutes=5), end, (RehearsedStep(StepName.BACKUP, "succeeded", 3.2),
                          RehearsedStep(StepName.DOWNGRADE, "succeeded", 75.0),
                          RehearsedStep(StepName.RESTART, "rejected", None)), code, migration)


@pytest.mark.parametrize(("shown", "migration", "warned"), [
    (rehearsal(), "9ddfdd63af30", []),
    (None, "9ddfdd63af30", ["no rehearsal on staging in the last 14 days: the runbook asks"]),
    (rehearsal(days_ago=20), "9ddfdd63af30",
     ["no rehearsal on staging in the last 14 days (the last ended 20 days ago)"]),
    (rehearsal(code="0.9+old"), "9ddfdd63af30",
     ["the rehearsal on staging ran bot code 0.9+old; this is 1.0+abc"]),
    (rehearsal(code=None), "9ddfdd63af30",
     ["ran bot code of an unrecorded revision; this is 1.0+abc"]),
    (rehearsal(), "0c6d1a600bb1",
     ["staging was at migration revision 9ddfdd63af30 when rehearsed; production is at "
      "0c6d1a600bb1"]),
    (rehearsal(), None, []),  # production's revision unknown: nothing to compare
])
def test_warnings(shown: Rehearsal | None, migration: str | None, warned: list[str]) -> None:
    _, warnings = rehearsal_report("staging", "production", shown, NOW, "1.0+abc", migration)
    assert len(warnings) == len(warned)
    for warning, expected in zip(warnings, warned, strict=True):
        assert expected in warning


def test_lines_say_when_by_whom_the_result_and_each_steps_duration() -> None:
    lines, _ = rehearsal_report("staging", "production", rehearsal(), NOW, "1.0+abc", None)
    assert lines[0] == ("Last rehearsal on staging: run 01234567 by carol, ended 2026-12-05 "
                        "12:00 UTC (2 days ago): completed")
    assert lines[1:] == ["    1. Back up the database (pg_dump -F c): succeeded, 3s",
                         "    2. Alembic downgrade to Phase 2: succeeded, 1m15s",
                         "    3. Restore Phase 2 code and restart api: rejected, did not run"]
