"""One line of `rollback-bot check`: a dependency, whether it is ready, and the fix if not."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = 5.0  # seconds any one probe may take: a check that hangs tells nobody anything
NOTES_SHOWN = 10


@dataclass(frozen=True)
class CheckLine:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    blocking: bool = True  # a problem here would stop a rollback
    notes: tuple[str, ...] = ()  # the particulars (e.g. refused directory rows), one a line

    def text(self) -> str:
        mark = "ok     " if self.ok else ("PROBLEM" if self.blocking else "warning")
        lines = [f"{mark} {self.name}: {self.detail}"]
        lines += [f"        - {note}" for note in self.notes[:NOTES_SHOWN]]
        if len(self.notes) > NOTES_SHOWN:
            lines.append(f"        - … and {len(self.notes) - NOTES_SHOWN} more")
        if not self.ok and self.fix:
            lines.append(f"        fix: {self.fix}")
        return "\n".join(lines)


def stops_rollback(lines: list[CheckLine]) -> bool:
    return any(not line.ok and line.blocking for line in lines)


def writable(name: str, folder: Path, fix: str) -> CheckLine:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return CheckLine(name, False, f"{folder} cannot be created: {short(exc)}", fix)
    if not os.access(folder, os.W_OK):
        return CheckLine(name, False, f"{folder} is not writable", fix)
    return CheckLine(name, True, f"{folder.resolve()} writable")


def short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
