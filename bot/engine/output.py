"""Step output on its way to the incident log: buffered in memory, flushed in batches.

A step may print 100,000 lines as fast as it can; the log gets one event per flush, so the
database and the thread see a steady trickle instead of a flood.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


class Redactor:
    """Masks known secret values (passwords, tokens) in any line before it is stored."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, line: str) -> str:
        return self._pattern.sub("***", line) if self._pattern else line


class OutputBuffer:
    """The sink a step writes to: `emit` never blocks; `drain` hands lines to the flusher."""

    MAX_LINE = 2000

    def __init__(self, redact: Redactor) -> None:
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
