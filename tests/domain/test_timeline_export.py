"""The exported markdown timeline: the post-rollback actions as a table with their owners and
done times, and the log's chain head as the file's last line."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bot.domain.follow_ups import FollowUpItem, FollowUpView, blank_follow_ups
from bot.domain.states import RunStatus
from bot.domain.timeline import timeline_markdown
from bot.domain.views import RunView

AT = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


@dataclass
class Event:
    id: int
    seq: int
    hash: str
    at: datetime = AT
    actor: str = "U1"
    source: str = "slack"
    kind: str = "run_started"
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def test_follow_ups_are_a_table_and_the_chain_head_ends_the_file() -> None:
    items = list(blank_follow_ups())
    items[0] = FollowUpView(FollowUpItem.ROOT_CAUSE, "U2", "dave | <!channel>",
                            datetime(2026, 12, 7, 4, 5, tzinfo=UTC), "U3", "erin",
                            datetime(2026, 12, 8, 9, 30, tzinfo=UTC))
    items[1] = replace(items[1], owner_id="U2", owner_name="dave",
                       owned_at=datetime(2026, 12, 7, 4, 6, tzinfo=UTC))
    run = RunView(run_id="0123456789abcdef", status=RunStatus.COMPLETED, initiator_id="U1",
                  initiator_name="carol", reason="r", created_at=AT, finished_at=AT, steps=(),
                  follow_ups=tuple(items))
    events = [Event(7, 1, "a" * 64), Event(9, 2, "b" * 64, kind="run_completed")]
    text = timeline_markdown(run, events)
    lines = text.splitlines()
    start = lines.index("## Post-rollback actions (1/5 done)")
    table = lines[start + 2:start + 9]
    assert table[0] == "| # | action | status | owner | owned (UTC) | done by | done (UTC) |"
    assert table[2] == ("| 1 | Root cause analysis: identify why Phase 3 failed | done | "
                        "`dave \\| <!channel>` | 2026-12-07 04:05 | `erin` | 2026-12-08 09:30 |")
    assert table[3] == ("| 2 | Fix the issues before attempting Phase 3 again | open | `dave` | "
                        "2026-12-07 04:06 |  |  |")
    assert table[6].startswith("| 5 | Monitoring") and table[6].endswith("| open |  |  |  |  |")
    assert lines[-1] == f"- head (event 9, seq 2): `{'b' * 64}`"
    assert f"`rollback-bot verify-log 01234567 --head {'b' * 64}`" in text
