"""A PostgreSQL server for the rehearsal: the configured one, the local one, or one we start.

Order: the server `DATABASE_URL` names; 127.0.0.1:5432 as user postgres; an embedded server from
the machine's `initdb`/`pg_ctl` in a temporary data directory, stopped at the end.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bot.urls import libpq_url, password_of, with_database

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class NoPostgres(Exception):
    """No server reachable and none could be started."""


@dataclass
class PostgresServer:
    admin_url: str  # a maintenance database on a server we may create databases on
    origin: str  # "configured", "local" or "embedded"
    stop: Callable[[], None] = field(default=lambda: None)

    async def create_database(self, name: str) -> str:
        await _execute(self.admin_url, f'CREATE DATABASE "{name}"')
        return with_database(self.admin_url, name)

    async def drop_database(self, name: str) -> None:
        await _execute(self.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _execute(admin_url: str, statement: str) -> None:
    conn = await asyncpg.connect(libpq_url(admin_url), password=password_of(admin_url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def reachable(url: str) -> bool:
    try:
        conn = await asyncpg.connect(libpq_url(url), password=password_of(url), timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def _pg_bin(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), reverse=True)
    return candidates[0] if candidates else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_embedded() -> PostgresServer:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise NoPostgres("no PostgreSQL reachable (DATABASE_URL, 127.0.0.1:5432) and no "
                         "initdb/pg_ctl to start one: install PostgreSQL or set DATABASE_URL")
    datadir = Path(tempfile.mkdtemp(prefix="rb-rehearsal-pg-"))
    port, run_as = free_port(), []
    if os.geteuid() == 0:  # initdb refuses root: run it as the postgres system user
        shutil.chown(datadir, user="postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run_as, initdb, "-D", str(datadir), "-U", "postgres", "-A", "trust"],
                   check=True, capture_output=True)
    subprocess.run([*run_as, pg_ctl, "-D", str(datadir), "-w", "-o",
                    f"-p {port} -k {datadir} -c listen_addresses=127.0.0.1", "start",
                    "-l", str(datadir / "server.log")], check=True, capture_output=True)

    def stop() -> None:
        subprocess.run([*run_as, pg_ctl, "-D", str(datadir), "-m", "fast", "stop"],
                       capture_output=True, check=False)
        shutil.rmtree(datadir, ignore_errors=True)

    return PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", "embedded", stop)


async def find_postgres(configured_url: str | None) -> PostgresServer:
    if configured_url:
        admin = with_database(configured_url, "postgres")
        if await reachable(admin):
            return PostgresServer(admin, "configured")
    if await reachable(LOCAL_URL):
        return PostgresServer(LOCAL_URL, "local")
    return await asyncio.to_thread(start_embedded)
