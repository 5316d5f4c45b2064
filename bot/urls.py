"""One database URL, spelled for each consumer: SQLAlchemy+asyncpg, asyncpg, and libpq tools.

A password may sit in the URL's user info or, as libpq allows, in its query (`?password=…`,
and the client key's `?sslpassword=…`). Either way it never reaches an argument list
(`/proc/<pid>/cmdline` is readable by every user): `tool_url` drops both, and `tool_env`
carries them, `PGPASSWORD` and, for `sslpassword` (libpq has no variable for it), a private
service file named by `PGSERVICEFILE`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import URL, make_url

QUERY_SECRETS = ("password", "sslpassword")
QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:ssl)?password=)[^&]*", re.IGNORECASE)


def sqlalchemy_url(url: str) -> URL:
    """The URL for SQLAlchemy's async engine (driver forced to asyncpg)."""
    return make_url(url).set(drivername="postgresql+asyncpg")


def libpq_url(url: str) -> str:
    """A plain `postgresql://` URL without the password, for asyncpg and the libpq tools.

    The password travels separately (`PGPASSWORD`), never in an argument list.
    """
    return _without(url, ("password",))


def tool_url(url: str) -> str:
    """The URL for a libpq program's argv: no password of any kind (see `tool_env`)."""
    return _without(url, QUERY_SECRETS)


def _without(url: str, query_names: tuple[str, ...]) -> str:
    parsed = make_url(url)
    query = {k: v for k, v in parsed.query.items() if k.lower() not in query_names}
    # URL.set(password=None) means "leave unchanged"; build the URL without it instead.
    bare = URL.create("postgresql", username=parsed.username, host=parsed.host,
                      port=parsed.port, database=parsed.database, query=query)
    return bare.render_as_string(hide_password=False)


def _query_value(url: str, name: str) -> str | None:
    value = make_url(url).query.get(name)
    if isinstance(value, tuple):
        value = value[-1] if value else None
    return value or None


def password_of(url: str) -> str | None:
    """The password, from the user info or else the query (`?password=`)."""
    return make_url(url).password or _query_value(url, "password")


@contextmanager
def tool_env(url: str) -> Iterator[dict[str, str]]:
    """The environment a libpq program needs for `tool_url(url)`'s passwords; a service file
    holding `sslpassword` (mode 0600, in a private folder) lives as long as the block."""
    env: dict[str, str] = {}
    password = password_of(url)
    if password:
        env["PGPASSWORD"] = password
    ssl_password = _query_value(url, "sslpassword")
    if not ssl_password:
        yield env
        return
    with tempfile.TemporaryDirectory(prefix="rollback-bot-pg-") as folder:
        path = os.path.join(folder, "pg_service.conf")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(f"[rollback-bot]\nsslpassword={ssl_password}\n")
        yield {**env, "PGSERVICEFILE": path, "PGSERVICE": "rollback-bot"}


def database_name(url: str) -> str:
    return make_url(url).database or ""


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def redacted(url: str) -> str:
    """The URL as it may appear in logs and Slack: every password masked, the user info's
    and the query's (`password`, `sslpassword`)."""
    shown = make_url(url).render_as_string(hide_password=True)
    return QUERY_PASSWORD.sub(lambda m: m.group("head") + "***", shown)
