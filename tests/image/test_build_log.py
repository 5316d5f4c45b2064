"""scripts/build-image.sh never prints the package index's credentials: the build still gets
the index URL, the log shows it with its password masked. The Docker CLI here is a stand-in
that records what it was asked (the log is what is under test, not the build)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAKE_DOCKER = """#!/bin/sh
case "$1" in
  buildx) exit 0 ;;
  image) echo 1234; exit 0 ;;
  build) printf '%s\\n' "$@" > "$RECORD"; echo "building"; exit 0 ;;
esac
exit 0
"""


def test_the_index_password_never_reaches_the_build_log(tmp_path: Path) -> None:
    docker = tmp_path / "bin" / "docker"
    docker.parent.mkdir()
    docker.write_text(FAKE_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "build-args"
    index = "https://deploy:s3cr3t-t0ken@pypi.internal.example/simple"
    env = {"PATH": f"{docker.parent}:{os.environ['PATH']}", "HOME": str(tmp_path),
           "PIP_INDEX_URL": index, "RECORD": str(record), "BASE_IMAGE": "base:test"}
    done = subprocess.run(["bash", "scripts/build-image.sh", "rb:test"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    printed = done.stdout + done.stderr
    assert "s3cr3t-t0ken" not in printed
    assert "pip index https://deploy:***@pypi.internal.example/simple" in done.stderr
    assert f"PIP_INDEX_URL={index}" in record.read_text().splitlines(), \
        "the build itself still gets the index"
