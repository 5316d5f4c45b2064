"""Step 4's page ranges, sized by time: each write transaction aims at a target duration.

A fixed number of pages per transaction holds row locks for as long as this machine, today,
needs for them: twice as long on a machine twice as slow or twice as loaded. Instead every
range is cut when a worker is ready for it, from what the last ranges of the same table cost:

- a slow-down counts at once (the next range is cut from the slowest recent cost per page);
- a speed-up counts by halves, and a range grows at most by half (or by one page) from the
  last one: the cost per page varies along a table (pages just rewritten, a checkpoint), and
  one lucky fast range must not make the next one long;
- a range is never below one page nor above the configured most;
- a range that ran too long anyway (the step cancels it, `steps.rotate_keys`) is given back:
  its cost so far counts as a slow-down, and it is cut again by that cost before any new range.

Pure: no I/O, no clock. `steps.rotate_keys` measures and reports; the tables of cases are in
`tests/steps/test_page_batches.py`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

OPEN_END = 2**31 - 1  # a TID's page number past any real one


@dataclass(frozen=True)
class PageRange:
    table: str
    first: int
    end: int  # exclusive; OPEN_END takes whatever pages the table has gained since
    pages: int  # of the table when the range was cut
    cancelled: int = 0  # how many times this range (or the one it was split from) was cut short

    @property
    def size(self) -> int:
        """Pages of the table this range covers (an open end counts what was measured)."""
        return min(self.end, self.pages) - self.first

    def label(self) -> str:
        last = self.pages if self.end == OPEN_END else self.end
        return f"{self.table} pages {self.first:,}-{last - 1:,} of {self.pages:,}"


@dataclass
class BatchSizer:
    """How many pages the next transaction of one table should take to last `target` seconds."""

    target: float
    first: int
    most: int
    _cost: float | None = None  # seconds per page: recent, leaning to the slowest
    _last: int = 0

    def pages(self) -> int:
        if self._cost is None:
            wanted = self.first
        else:
            wanted = int(self.target / self._cost) if self._cost > 0 else self.most
            wanted = min(wanted, max(self._last + 1, self._last * 3 // 2))
        return max(1, min(wanted, self.most))

    def observe(self, pages: int, seconds: float) -> None:
        """A transaction over `pages` pages took `seconds`."""
        if pages <= 0:
            return
        cost = max(seconds, 0.0) / pages
        if self._cost is None or cost >= self._cost:
            self._cost = cost
        else:
            self._cost = (self._cost + cost) / 2
        self._last = pages


@dataclass
class PageCursor:
    """Cuts the next range off the tables, in order, each table's ranges sized by its sizer.
    With `open_end` the last range of a table also takes the pages it has gained since."""

    sizes: dict[str, int]
    sizers: dict[str, BatchSizer]
    open_end: bool = False
    _table: int = 0
    _next: int = 0
    _given_back: deque[PageRange] = field(default_factory=deque)

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    def give_back(self, cut: PageRange, seconds: float) -> None:
        """A range cut short after `seconds` (rolled back): it comes next, cut again by what
        its table is now known to cost at least, per page."""
        self.sizers[cut.table].observe(cut.size, seconds)
        self._given_back.appendleft(replace(cut, cancelled=cut.cancelled + 1))

    def take(self) -> PageRange | None:
        if self._given_back:
            again = self._given_back.popleft()
            wanted = self.sizers[again.table].pages()
            if wanted >= again.size:
                return again
            self._given_back.appendleft(replace(again, first=again.first + wanted))
            return replace(again, end=again.first + wanted)
        tables = list(self.sizes)
        while self._table < len(tables):
            table = tables[self._table]
            pages = self.sizes[table]
            if self._next < pages:
                end = min(self._next + self.sizers[table].pages(), pages)
                cut = PageRange(table, self._next,
                                OPEN_END if self.open_end and end == pages else end, pages)
                self._next = end
                return cut
            self._table, self._next = self._table + 1, 0
        return None
