"""A stand-in for the service's checkout: a git repository whose tags are the two code phases.

`git checkout -q phase-2` in it is what "restore Phase 2 application code" means for the sandbox;
the api reads the file PHASE at startup.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT = ["git", "-c", "user.name=sandbox", "-c", "user.email=sandbox@example.test",
       "-c", "init.defaultBranch=main", "-c", "advice.detachedHead=false"]


def make_code_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)

    def git(*args: str) -> None:
        subprocess.run([*GIT, *args], cwd=path, check=True, capture_output=True)

    git("init", "-q")
    for phase in ("2", "3"):
        (path / "PHASE").write_text(f"{phase}\n")
        git("add", "PHASE")
        git("commit", "-q", "-m", f"Phase {phase} code")
        git("tag", f"phase-{phase}")
        git("tag", f"phase{phase}")
    return path
