"""Run the sandbox's own Alembic chain programmatically (as the service's operators would)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

HERE = Path(__file__).resolve().parent
_ENV_LOCK = threading.Lock()  # env.py reads DATABASE_URL from the process environment


def asyncpg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(
        hide_password=False)


def _run(url: str, revision: str, down: bool) -> None:
    config = Config(str(HERE / "alembic.ini"))
    config.set_main_option("script_location", str(HERE / "alembic"))
    with _ENV_LOCK:
        previous = os.environ.get("DATABASE_URL")
        os.environ["DATABASE_URL"] = asyncpg_url(url)  # env.py reads it, like the real one
        try:
            (command.downgrade if down else command.upgrade)(config, revision)
        finally:
            if previous is None:
                os.environ.pop("DATABASE_URL", None)
            else:
                os.environ["DATABASE_URL"] = previous


async def migrate(url: str, revision: str = "head", *, down: bool = False) -> None:
    await asyncio.to_thread(_run, url, revision, down)
