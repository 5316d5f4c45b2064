"""Step 4's transactions sized by time: how the next range follows from what the last ones cost.

Pure: the sizer and the cursor do no I/O and read no clock.
"""

from __future__ import annotations

import pytest

from steps.page_batches import OPEN_END, BatchSizer, PageCursor, PageRange
from steps.rotate_keys import transaction_seconds

TARGET = 0.5


def sizer(first: int = 200, most: int = 20_000) -> BatchSizer:
    return BatchSizer(TARGET, first, most)


@pytest.mark.parametrize(("observed", "expected", "why"), [
    ([], 200, "nothing measured yet: the configured first size"),
    ([(200, 0.25)], 300, "twice as fast as the target: grows by half, no more"),
    ([(200, 0.01)], 300, "fifty times too fast: still only by half"),
    ([(200, 0.5)], 200, "on target: stays"),
    ([(200, 2.0)], 50, "four times too slow: a quarter at once"),
    ([(200, 0.5), (200, 5.0)], 20, "a sudden slow-down counts in full at once"),
    ([(200, 2.0), (50, 0.125)], 75,
     "a speed-up after a slow-down: by halves, by half again at most"),
    ([(200, 0.0)], 300, "too fast to measure: by half"),
    ([(200, 100.0)], 1, "never below one page"),
])
def test_the_next_range_follows_the_last_costs(
    observed: list[tuple[int, float]], expected: int, why: str,
) -> None:
    s = sizer()
    for pages, seconds in observed:
        s.observe(pages, seconds)
    assert s.pages() == expected, why


def test_never_more_than_the_most() -> None:
    s = sizer(first=200, most=300)
    s.observe(200, 0.01)
    assert s.pages() == 300
    assert sizer(first=500, most=300).pages() == 300


def test_on_a_machine_that_slows_down_no_transaction_runs_long() -> None:
    """Pages cost 1 ms, then (another load starts) 8 ms: the ranges shrink at once, so the one
    cut after the slow-down was seen lasts the target, and only the one in flight overshoots."""
    s, costs, durations = sizer(first=50), [0.001] * 30 + [0.008] * 30, []
    for cost in costs:
        pages = s.pages()
        durations.append(pages * cost)
        s.observe(pages, pages * cost)
    assert max(durations[:30]) <= TARGET
    assert durations[30] > 1.0, "the range in flight when it slowed down"
    assert all(d <= TARGET for d in durations[31:])
    assert durations[-1] == pytest.approx(TARGET, rel=0.05), "and back at the target"


def test_a_cursor_cuts_each_table_in_order_with_its_own_sizer() -> None:
    sizes = {"sessions": 10, "assistants": 3}
    cursor = PageCursor(sizes, {t: BatchSizer(TARGET, 4, 100) for t in sizes})
    first = cursor.take()
    assert first == PageRange("sessions", 0, 4, 10)
    cursor.sizers["sessions"].observe(4, 4.0)  # 1 s per page: half a page wanted -> 1
    assert cursor.take() == PageRange("sessions", 4, 5, 10)
    cursor.sizers["sessions"].observe(1, 0.05)  # 0.525 s per page (by halves): still 1
    assert cursor.take() == PageRange("sessions", 5, 6, 10)
    cursor.sizers["sessions"].observe(1, 0.001)  # 0.263 s per page: 1.9 -> 1
    cursor.sizers["sessions"].observe(1, 0.001)  # 0.132 s per page: 3.8; one page more at most: 2
    assert cursor.take() == PageRange("sessions", 6, 8, 10)
    cursor.sizers["sessions"].observe(2, 0.001)
    assert cursor.take() == PageRange("sessions", 8, 10, 10), "clipped at the table's end"
    assert cursor.take() == PageRange("assistants", 0, 3, 3), "its own first size"
    assert cursor.take() is None
    assert cursor.total == 13


def test_a_sweep_cursor_leaves_each_tables_last_range_open() -> None:
    sizes = {"sessions": 5, "assistants": 0}
    cursor = PageCursor(sizes, {t: BatchSizer(TARGET, 3, 100) for t in sizes}, open_end=True)
    ranges = [cursor.take(), cursor.take(), cursor.take()]
    assert ranges == [PageRange("sessions", 0, 3, 5), PageRange("sessions", 3, OPEN_END, 5),
                      None], "an empty table has nothing to sweep"
    last = ranges[1]
    assert last is not None and last.size == 2
    assert last.label() == "sessions pages 3-4 of 5"


def test_transaction_seconds_are_reported_by_nearest_rank() -> None:
    """The step's facts show the distribution: a single slow transaction moves the max, not
    the p90 of a hundred."""
    seconds = [0.5] * 98 + [0.9, 4.0]
    assert transaction_seconds(seconds) == {"txn_p50_s": 0.5, "txn_p90_s": 0.5,
                                            "txn_p99_s": 0.9, "longest_batch_s": 4.0}
    assert transaction_seconds([]) == dict.fromkeys(
        ("txn_p50_s", "txn_p90_s", "txn_p99_s", "longest_batch_s"), 0.0)


def test_a_range_cut_short_is_cut_again_by_its_cost_before_any_new_range() -> None:
    cursor = PageCursor({"sessions": 100}, {"sessions": BatchSizer(TARGET, 40, 100)})
    first = cursor.take()
    assert first == PageRange("sessions", 0, 40, 100)
    cursor.give_back(first, 0.9)  # cancelled at 0.9 s: 22.5 ms a page at least: 22 pages
    assert cursor.take() == PageRange("sessions", 0, 22, 100, cancelled=1)
    assert cursor.take() == PageRange("sessions", 22, 40, 100, cancelled=1), "the rest of it"
    assert cursor.take() == PageRange("sessions", 40, 62, 100), "then new ranges, same cost"


def test_a_cut_short_open_end_keeps_its_open_end() -> None:
    cursor = PageCursor({"sessions": 100}, {"sessions": BatchSizer(TARGET, 40, 100)},
                        open_end=True)
    cursor.take(), cursor.take()
    last = cursor.take()
    assert last == PageRange("sessions", 80, OPEN_END, 100)
    cursor.give_back(last, 0.9)
    assert cursor.take() == PageRange("sessions", 80, 91, 100, cancelled=1)
    assert cursor.take() == PageRange("sessions", 91, OPEN_END, 100, cancelled=1)
    assert cursor.take() is None


def test_one_page_cut_short_comes_back_whole_counting_its_cancels() -> None:
    cursor = PageCursor({"sessions": 5}, {"sessions": BatchSizer(TARGET, 1, 100)})
    page = cursor.take()
    assert page is not None
    for _ in range(3):
        cursor.give_back(page, 0.9)
        page = cursor.take()
        assert page is not None
    assert page == PageRange("sessions", 0, 1, 5, cancelled=3)
