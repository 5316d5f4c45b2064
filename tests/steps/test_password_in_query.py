"""A password in a database URL's query (`?password=…`, `?sslpassword=…`, both libpq-valid)
never reaches a program's argv: read from `/proc/<pid>/cmdline` of a real `pg_dump`, held
connecting by a proxy that holds the connection of whatever names itself `pg_dump` in its
startup packet (`application_name`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from urllib.parse import quote

from sqlalchemy.engine import make_url

from steps.backup import BackupStep
from tests.crash.db_proxy import PausableProxy
from tests.steps.step_context import settings_for, step_context
from tests.steps.test_backup import small_db

__all__ = ["small_db"]

PASSWORD = "q pw@:%#/é-27"
SSL_PASSWORD = "key phrase/27#"


def pg_dump_children() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid() and "pg_dump" in (entry / "comm").read_text():
                found.append(int(entry.name))
    return found


async def test_query_passwords_reach_pg_dump_only_through_its_environment(
    small_db: str, tmp_path: Path,
) -> None:
    target = make_url(small_db)
    async with PausableProxy.for_url(small_db, hold_when=b"pg_dump") as proxy:
        url = (f"postgresql://{target.username}@127.0.0.1:{proxy.port}/{target.database}"
               f"?password={quote(PASSWORD, safe='')}&sslpassword={quote(SSL_PASSWORD)}")
        settings = settings_for(target_database_url=url, backup_dir=tmp_path / "b")
        lines: list[str] = []
        running = asyncio.create_task(BackupStep().run(step_context(settings), lines.append))
        try:
            async with asyncio.timeout(30):  # pg_dump is connecting: past any wrapper's exec
                while not proxy.held.is_set():
                    assert not running.done(), running.exception()
                    await asyncio.sleep(0.05)
            (pid,) = pg_dump_children()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ")
                           .read_bytes().decode().split("\0") if "=" in item)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    shown = " ".join(argv)
    assert argv[0].endswith("pg_dump") and f"127.0.0.1:{proxy.port}" in shown, shown
    for secret in (PASSWORD, SSL_PASSWORD, quote(PASSWORD, safe=""), quote(SSL_PASSWORD)):
        assert secret not in shown, "a password is in pg_dump's argv"
    assert "password=" not in shown and not [line for line in lines if "q pw" in line]
    assert environ["PGPASSWORD"] == PASSWORD
    service_file = Path(environ["PGSERVICEFILE"])
    assert environ["PGSERVICE"] == "rollback-bot"
    assert not service_file.exists(), "the service file outlived the step"

