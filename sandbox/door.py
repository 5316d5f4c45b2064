"""The door key: the one `API_KEY` the real service checks every request against.

Like the service's settings (pydantic-settings with `env_file=".env"`), the key is read once at
startup, from the process environment if set there, else from the env file (`SANDBOX_ENV_FILE`).
Without either, the sandbox has no door and behaves as the runbook assumes (a key per client).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PUBLIC_PATHS = frozenset({"/health"})


def parse_env_file(text: str) -> dict[str, str]:
    """`NAME=value` lines as dotenv reads them: `export ` prefixes, quotes and comments."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[name.strip()] = value
    return values


def read_door_key() -> str | None:
    if os.environ.get("API_KEY"):
        return os.environ["API_KEY"]
    path = os.environ.get("SANDBOX_ENV_FILE")
    if not path:
        return None
    return parse_env_file(Path(path).read_text(encoding="utf-8")).get("API_KEY") or None


def door_refusal(door_key: str | None, presented: str) -> str | None:
    """Why the door refuses this request's key, or None when it may pass."""
    if door_key is None:
        return None
    if not presented:
        return "Missing API key"
    if not secrets.compare_digest(presented.encode(), door_key.encode()):
        return "Invalid API key"
    return None
