"""One database URL, spelled for each consumer: SQLAlchemy+asyncpg, asyncpg, and libpq tools."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url


def sqlalchemy_url(url: str) -> URL:
    """The URL for SQLAlchemy's async engine (driver forced to asyncpg)."""
    return make_url(url).set(drivername="postgresql+asyncpg")


def libpq_url(url: str) -> str:
    """A plain `postgresql://` URL without the password, for asyncpg and the libpq tools.

    The password travels separately (`PGPASSWORD`), never in an argument list.
    """
    parsed = make_url(url)
    # URL.set(password=None) means "leave unchanged"; build the URL without it instead.
    bare = URL.create("postgresql", username=parsed.username, host=parsed.host,
                      port=parsed.port, database=parsed.database, query=parsed.query)
    return bare.render_as_string(hide_password=False)


def password_of(url: str) -> str | None:
    return make_url(url).password


def database_name(url: str) -> str:
    return make_url(url).database or ""


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def redacted(url: str) -> str:
    """The URL as it may appear in logs and Slack: password masked."""
    return make_url(url).render_as_string(hide_password=True)
