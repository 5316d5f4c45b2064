"""The runbook's post-rollback actions, tracked to done after a run ends.

A rollback is not over when step 6 passes: the runbook lists five things that must happen before
Phase 3 is tried again. Each becomes an item with an owner and a "done" mark, recorded in the
bot's database and the incident log, so the thread, the board, the summary, the timeline and
`status` all say which are still open. Items exist from the moment a run ends; a row is written
only when someone owns or closes one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class FollowUpItem(StrEnum):
    ROOT_CAUSE = "root_cause"
    FIX_ISSUES = "fix_issues"
    STAGING_TESTS = "staging_tests"
    GRADUAL_ROLLOUT = "gradual_rollout"
    AUTH_MONITORING = "auth_monitoring"


FOLLOW_UP_ORDER: tuple[FollowUpItem, ...] = tuple(FollowUpItem)

FOLLOW_UP_TITLES: dict[FollowUpItem, str] = {
    FollowUpItem.ROOT_CAUSE: "Root cause analysis: identify why Phase 3 failed",
    FollowUpItem.FIX_ISSUES: "Fix the issues before attempting Phase 3 again",
    FollowUpItem.STAGING_TESTS: "Extended testing: test the fix in staging for 2+ weeks",
    FollowUpItem.GRADUAL_ROLLOUT: "Gradual rollout: Phase 3 to a small percentage of traffic first",
    FollowUpItem.AUTH_MONITORING: "Monitoring: enhanced monitoring of authentication failures",
}


class FollowUpAction(StrEnum):
    OWN = "own"
    DONE = "done"


@dataclass(frozen=True)
class FollowUpView:
    item: FollowUpItem
    owner_id: str | None = None
    owner_name: str | None = None
    owned_at: datetime | None = None
    done_by_id: str | None = None
    done_by_name: str | None = None
    done_at: datetime | None = None

    @property
    def title(self) -> str:
        return FOLLOW_UP_TITLES[self.item]

    @property
    def number(self) -> int:
        return FOLLOW_UP_ORDER.index(self.item) + 1

    @property
    def done(self) -> bool:
        return self.done_at is not None


def blank_follow_ups() -> tuple[FollowUpView, ...]:
    return tuple(FollowUpView(item) for item in FOLLOW_UP_ORDER)


def done_count(items: Iterable[FollowUpView]) -> int:
    return sum(1 for item in items if item.done)


def open_items(items: Iterable[FollowUpView]) -> list[FollowUpView]:
    return [item for item in items if not item.done]


def parse_item(word: str) -> FollowUpItem | None:
    """An item by its number (1-5) or its name, as typed at a terminal or in a command."""
    word = word.strip().lower()
    if word.isdigit() and 1 <= int(word) <= len(FOLLOW_UP_ORDER):
        return FOLLOW_UP_ORDER[int(word) - 1]
    try:
        return FollowUpItem(word)
    except ValueError:
        return None


def follow_up_refusal(
    action: FollowUpAction, *, authorised: bool, run_finished: bool, current: FollowUpView,
    user_id: str,
) -> str | None:
    """Why this person may not own or close this item now (None: they may)."""
    if not authorised:
        return "you are not an authorised engineer for rollbacks"
    if not run_finished:
        return "post-rollback actions open when the rollback has ended"
    if current.done:
        return f"already done by {current.done_by_name} at {current.done_at:%Y-%m-%d %H:%M} UTC"
    if action is FollowUpAction.OWN and current.owner_id == user_id:
        return "you already own this item"
    return None


def follow_up_line(item: FollowUpView) -> str:
    """One plain-text line: the box, the title, who owns it, who closed it and when."""
    box = "[x]" if item.done else "[ ]"
    line = f"{box} {item.number}. {item.title}"
    if item.owner_name:
        line += f" — owner {item.owner_name}"
    if item.done and item.done_at is not None:
        line += f" — done by {item.done_by_name} at {item.done_at:%Y-%m-%d %H:%M} UTC"
    return line


FOLLOW_UP_COLUMNS = ("#", "action", "status", "owner", "owned (UTC)", "done by",
                     "done (UTC)")


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M}" if at is not None else ""


def follow_up_rows(items: Iterable[FollowUpView]) -> list[tuple[str, ...]]:
    """The checklist as a table's rows (FOLLOW_UP_COLUMNS): for the exported timeline and the
    terminal alike, so both say the same about who owns what and when it was done."""
    return [(str(item.number), item.title, "done" if item.done else "open",
             item.owner_name or "", _when(item.owned_at), item.done_by_name or "",
             _when(item.done_at)) for item in items]


def text_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Rows under their header in aligned columns, for a terminal."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in (header, tuple("-" * width for width in widths), *rows)]
