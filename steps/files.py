"""Files the steps leave on disk hold secrets (a dump holds every row; an `.eml` holds a key):
each is written readable by the bot's user only (0600), whatever the umask, and atomically, so
a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_MODE = 0o600


def create_private(path: Path) -> None:
    """`path` as an empty file of mode 0600 (for a program that then writes into it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    os.close(fd)
    os.chmod(path, PRIVATE_MODE)  # an existing file keeps its old mode through O_CREAT


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (a hidden partial file, fsync, rename), mode 0600."""
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(partial, PRIVATE_MODE)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def make_private_dir(folder: Path) -> None:
    """Create `folder` (and parents) as 0700 when it does not exist; an existing one is kept."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
