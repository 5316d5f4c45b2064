"""Which bot code is running: recorded when a run starts, so that production's plan can tell
whether the staging rehearsal ran the same code (bot/domain/rehearsal.py)."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


@functools.cache
def code_revision() -> str:
    """`<package version>+<git commit>` in a checkout, the version alone in an installed image
    (no git there). A checkout with local changes says so (`-dirty`)."""
    try:
        version = metadata.version("rollback-bot")
    except metadata.PackageNotFoundError:
        version = "unknown"
    if not (CHECKOUT / ".git").exists():
        return version
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=CHECKOUT,
            capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+{described}" if described else version
