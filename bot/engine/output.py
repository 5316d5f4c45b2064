"""Step output on its way to the incident log: buffered in memory, flushed in batches.

A step may print 100,000 lines as fast as it can; the log gets one event per flush, so the
database and the thread see a steady trickle instead of a flood.
"""

from __future__ import annotations

from collections.abc import Callable


class OutputBuffer:
    """The sink a step writes to: `emit` never blocks; `drain` hands lines to the flusher."""

    MAX_LINE = 2000

    def __init__(self, redact: Callable[[str], str]) -> None:
        self._redact = redact
        self._pending: list[str] = []
        self.total = 0

    def emit(self, line: str) -> None:
        line = self._redact(line.rstrip("\n"))
        if len(line) > self.MAX_LINE:
            line = line[: self.MAX_LINE] + " …[truncated]"
        self._pending.append(line)
        self.total += 1

    def drain(self) -> tuple[int, list[str]]:
        """(index of the first drained line, the lines) and empty the buffer."""
        lines, self._pending = self._pending, []
        return self.total - len(lines), lines
