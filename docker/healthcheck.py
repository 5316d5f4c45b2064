"""The image's HEALTHCHECK: GET /health of `rollback-bot serve --http` in this container.

The address comes from the serving process's own command line (`--host`, `--port`), so a port
chosen at `docker run` needs no second setting. In Socket Mode the bot serves no endpoint: the
check then only reports that (healthy while the process lives; Docker restarts a dead one by its
restart policy). Any other command (`check`, `migrate`) has nothing to probe either.
`--ready` probes GET /ready instead: 503 while draining or while the schema is behind.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from pathlib import Path


def serve_arguments() -> list[str] | None:
    """The arguments after `serve` of the rollback-bot process in this container, if any."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for i, arg in enumerate(argv[:-1]):
            if arg.endswith("rollback-bot") and argv[i + 1] == "serve":
                return [a for a in argv[i + 2:] if a]
    return None


def main() -> int:
    args = serve_arguments()
    if args is None:
        print("no `rollback-bot serve` in this container")
        return 1
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=3000)
    options, _ = parser.parse_known_args(args)
    if not options.http:
        print("Socket Mode: no HTTP endpoint to probe; the process is running")
        return 0
    host = "127.0.0.1" if options.host in ("0.0.0.0", "", "::") else options.host
    path = "/ready" if "--ready" in sys.argv[1:] else "/health"
    url = f"http://{'[' + host + ']' if ':' in host else host}:{options.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=4) as answer:
            print(f"{url}: {answer.status}")
            return 0 if answer.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
