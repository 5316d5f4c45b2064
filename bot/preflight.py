"""`rollback-bot check`: one line per dependency a rollback needs, each with the fix for a problem.

Run it before an incident (and at its start): a rollback that stops halfway because the Docker
engine or the mail server was never reachable is worse than one that never started. Nothing here
changes anything: no mail is sent, no container touched, no row written.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import shlex
import shutil
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import aiohttp
import asyncpg

from bot.settings import MailerKind, RestartStrategy, Settings, SmtpSecurity
from bot.slack.people import usergroup_check
from bot.urls import libpq_url, password_of, redacted
from steps.rotate_keys import WORK_SCHEMA

TIMEOUT = 5.0


@dataclass(frozen=True)
class CheckLine:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    blocking: bool = True  # a problem here would stop a rollback

    def text(self) -> str:
        mark = "ok     " if self.ok else ("PROBLEM" if self.blocking else "warning")
        line = f"{mark} {self.name}: {self.detail}"
        return line if self.ok or not self.fix else f"{line}\n        fix: {self.fix}"


def stops_rollback(lines: list[CheckLine]) -> bool:
    return any(not line.ok and line.blocking for line in lines)


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(libpq_url(url), password=password_of(url), timeout=TIMEOUT)


# --- one check per dependency ---------------------------------------------------------------


async def check_slack(settings: Settings) -> CheckLine | None:
    if settings.slack_bot_token is None:
        return None  # the terminal front needs no Slack
    url = settings.slack_api_url.rstrip("/") + "/auth.test"
    token = settings.slack_bot_token.get_secret_value()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http, \
                http.post(url, headers={"Authorization": f"Bearer {token}"}) as answer:
            body = await answer.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return CheckLine("slack", False, f"{url} unreachable ({type(exc).__name__})",
                         "check SLACK_API_URL and the network to Slack; use `rollback-bot "
                         "rehearse --real` from a terminal while Slack is down")
    if not body.get("ok"):
        return CheckLine("slack", False, f"auth.test refused the token: {body.get('error')}",
                         "reinstall the app and copy the xoxb- token into SLACK_BOT_TOKEN")
    return CheckLine("slack", True, f"token valid for {body.get('team')} as {body.get('user')}")


async def check_approvers(settings: Settings) -> CheckLine | None:
    """APPROVER_USERGROUP_ID can be read (else every command and click is refused)."""
    found = await usergroup_check(settings)
    if found is None:
        return None
    ok, detail, fix = found
    return CheckLine("approvers", ok, detail, fix)


async def check_bot_db(settings: Settings) -> CheckLine:
    if settings.database_url is None:
        return CheckLine("bot database", False, "DATABASE_URL is not set",
                         "set DATABASE_URL to a PostgreSQL database for the bot's own state")
    url = settings.database_url.get_secret_value()
    from bot.db.migrate import current_revision, head_revision

    try:
        current = await asyncio.wait_for(current_revision(url), TIMEOUT * 2)
    except Exception as exc:
        return CheckLine("bot database", False, f"{redacted(url)} unreachable: {_short(exc)}",
                         "start the database or correct DATABASE_URL")
    head = head_revision()
    if current != head:
        return CheckLine("bot database", False,
                         f"schema at revision {current or 'none'}, expected {head}",
                         "run `rollback-bot migrate`")
    return CheckLine("bot database", True, f"{redacted(url)} at revision {head}")


async def _target_facts(settings: Settings) -> tuple[str | None, int, str | None]:
    """(alembic revision, server major version, problem) of the target database."""
    url = settings.target_database_url.get_secret_value()
    try:
        conn = await _connect(url)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return None, 0, f"{redacted(url)} unreachable: {_short(exc)}"
    try:
        major = int(await conn.fetchval("SHOW server_version_num")) // 10000
        try:
            revision = await conn.fetchval("SELECT version_num FROM alembic_version")
        except asyncpg.UndefinedTableError:
            revision = None
    finally:
        await conn.close()
    return revision, major, None


def check_target_revision(settings: Settings, revision: str | None, problem: str | None
                          ) -> CheckLine:
    url = redacted(settings.target_database_url.get_secret_value())
    fix_url = "start the target database or correct TARGET_DATABASE_URL"
    if problem is not None:
        return CheckLine("target database", False, problem, fix_url)
    head = settings.phase3_revisions[-1] if settings.phase3_revisions else "?"
    if revision == head:
        return CheckLine("target database", True, f"{url} at Phase 3 head {head}")
    if revision == settings.phase2_revision:
        return CheckLine("target database", True,
                         f"{url} already at Phase 2 ({revision}): the downgrade will be skipped")
    return CheckLine("target database", False,
                     f"{url} at revision {revision or 'none'}, expected the Phase 3 head {head}",
                     "the downgrade refuses any other revision: inspect alembic_version by "
                     "hand (PHASE3_REVISIONS lists the chain the bot knows)")


async def check_work_table(settings: Settings) -> CheckLine | None:
    """Step 4 makes the new keys in a work table of its own schema in the target."""
    url = settings.target_database_url.get_secret_value()
    try:
        conn = await _connect(url)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return None  # the target database line says why
    try:
        user, database, allowed = await conn.fetchrow(
            "SELECT current_user, current_database(),"
            " has_database_privilege(current_database(), 'CREATE') OR EXISTS ("
            "   SELECT 1 FROM pg_namespace WHERE nspname = $1"
            "      AND has_schema_privilege(oid, 'CREATE'))", WORK_SCHEMA)
    finally:
        await conn.close()
    if allowed:
        return CheckLine("key work table", True,
                         f"{user} may create the schema {WORK_SCHEMA} for step 4's work table")
    return CheckLine("key work table", False,
                     f"{user} may not create the schema {WORK_SCHEMA} in {database}: step 4 "
                     "makes the new keys in a work table there",
                     f'GRANT CREATE ON DATABASE "{database}" TO "{user}" (or create the schema '
                     f"{WORK_SCHEMA} owned by {user})")


async def check_pg_dump(settings: Settings, server_major: int) -> CheckLine:
    tool = shutil.which(settings.pg_dump_path) or settings.pg_dump_path
    try:
        proc = await asyncio.create_subprocess_exec(
            tool, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except (OSError, TimeoutError) as exc:
        return CheckLine("pg_dump", False, f"{settings.pg_dump_path} cannot run: {_short(exc)}",
                         "install the PostgreSQL client tools or set PG_DUMP_PATH")
    found = re.search(r"(\d+)(?:\.\d+)?", out.decode(errors="replace"))
    client_major = int(found.group(1)) if found else 0
    if server_major and client_major < server_major:
        return CheckLine("pg_dump", False,
                         f"pg_dump {client_major} is older than the target server {server_major}",
                         f"install pg_dump {server_major} or newer and point PG_DUMP_PATH at it")
    versus = f" (server {server_major})" if server_major else ""
    return CheckLine("pg_dump", True, f"{tool} version {client_major}{versus}")


def _container_filters(settings: Settings) -> tuple[dict[str, list[str]], str]:
    if settings.api_container_name:
        return {"name": [settings.api_container_name]}, f"name {settings.api_container_name}"
    labels = [f"com.docker.compose.service={settings.api_compose_service}"]
    if settings.api_compose_project:
        labels.append(f"com.docker.compose.project={settings.api_compose_project}")
    return {"label": labels}, "labels " + ", ".join(labels)


async def check_restart(settings: Settings) -> CheckLine:
    if settings.restart_strategy is RestartStrategy.COMMAND:
        words = shlex.split(settings.restart_command) if settings.restart_command else []
        if not words:
            return CheckLine("restart", False, "RESTART_STRATEGY=command but RESTART_COMMAND "
                             "is empty", "set RESTART_COMMAND (or RESTART_STRATEGY=docker)")
        if shutil.which(words[0]) is None:
            return CheckLine("restart", False, f"restart command {words[0]!r} not found",
                             "fix RESTART_COMMAND's program path")
        return CheckLine("restart", True, f"command {words[0]} ({len(words) - 1} arguments)")
    import aiodocker

    filters, described = _container_filters(settings)
    host = os.environ.get("DOCKER_HOST", "the default socket")
    try:
        async with aiodocker.Docker() as docker:
            found = await asyncio.wait_for(docker.containers.list(all=True, filters=filters),
                                           TIMEOUT)
    except (aiodocker.DockerError, OSError, TimeoutError, ValueError) as exc:
        return CheckLine("docker", False, f"engine at {host} unreachable: {_short(exc)}",
                         "start Docker or set DOCKER_HOST (or RESTART_STRATEGY=command)")
    running = [c for c in found if c["State"] == "running"]
    if not found:
        return CheckLine("docker", False, f"no api container matches {described} at {host}",
                         "set API_COMPOSE_PROJECT/API_COMPOSE_SERVICE or API_CONTAINER_NAME")
    names = ", ".join(str(c["Names"][0]).lstrip("/") for c in found)
    if not running:
        return CheckLine("docker", False, f"matched {names} but none is running",
                         "start the api container", blocking=False)
    return CheckLine("docker", True, f"{len(running)} running api container(s) match "
                     f"{described}: {names}")


async def check_mailer(settings: Settings) -> CheckLine:
    if settings.mailer is MailerKind.OUTBOX:
        return _writable("outbox", settings.outbox_dir, "set OUTBOX_DIR to a writable folder")
    import aiosmtplib

    where = f"{settings.smtp_host}:{settings.smtp_port}"
    client = aiosmtplib.SMTP(hostname=settings.smtp_host, port=settings.smtp_port,
                             use_tls=settings.smtp_security is SmtpSecurity.TLS,
                             start_tls=False, timeout=TIMEOUT)
    try:
        await client.connect()
        code, _ = await client.ehlo()
        if settings.smtp_security is SmtpSecurity.STARTTLS and not client.supports_extension(
                "starttls"):
            return CheckLine("smtp", False, f"{where} does not offer STARTTLS",
                             "set SMTP_SECURITY to match the server")
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return CheckLine("smtp", False, f"{where} unreachable: {_short(exc)}",
                         "check SMTP_HOST/SMTP_PORT/SMTP_SECURITY (or MAILER=outbox)")
    return CheckLine("smtp", True, f"{where} answered EHLO ({code}); no mail sent")


def _writable(name: str, folder: Path, fix: str) -> CheckLine:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return CheckLine(name, False, f"{folder} cannot be created: {_short(exc)}", fix)
    if not os.access(folder, os.W_OK):
        return CheckLine(name, False, f"{folder} is not writable", fix)
    return CheckLine(name, True, f"{folder.resolve()} writable")


async def _client_hashes(settings: Settings) -> set[str] | None:
    try:
        conn = await _connect(settings.target_database_url.get_secret_value())
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return None
    try:
        rows = await conn.fetch(
            "SELECT owner_api_key_hash AS h FROM sessions WHERE owner_api_key_hash IS NOT NULL "
            "UNION SELECT owner_api_key_hash FROM assistants WHERE owner_api_key_hash IS NOT NULL")
        return {row["h"] for row in rows}
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()


async def _contacts(settings: Settings) -> dict[str, str]:
    if settings.client_directory is not None:
        with settings.client_directory.open(newline="", encoding="utf-8") as handle:
            return {row["api_key_sha256"].strip().lower(): row["email"].strip()
                    for row in csv.DictReader(handle)
                    if row.get("api_key_sha256") and (row.get("email") or "").strip()}
    conn = await _connect(settings.target_database_url.get_secret_value())
    try:
        rows = await conn.fetch(settings.client_directory_query)
    finally:
        await conn.close()
    return {str(r["api_key_sha256"]).lower(): str(r["email"]) for r in rows if r["email"]}


async def check_directory(settings: Settings) -> CheckLine:
    if settings.client_directory is None and not settings.client_directory_query:
        return CheckLine("client directory", False, "neither CLIENT_DIRECTORY nor "
                         "CLIENT_DIRECTORY_QUERY is set: no client could be emailed its key",
                         "set CLIENT_DIRECTORY to a CSV name,email,api_key_sha256")
    try:
        contacts = await _contacts(settings)
    except (OSError, KeyError, csv.Error, asyncpg.PostgresError) as exc:
        return CheckLine("client directory", False, f"cannot be read: {_short(exc)}",
                         "fix CLIENT_DIRECTORY (CSV name,email,api_key_sha256) or the query")
    hashes = await _client_hashes(settings)
    if hashes is None:
        return CheckLine("client directory", True, f"{len(contacts)} contacts (target not "
                         "readable, so not matched against the clients)")
    reached = len(hashes & contacts.keys())
    line = CheckLine("client directory", True,
                     f"{reached} of {len(hashes)} client hashes have a contact")
    if hashes and reached < len(hashes):
        return CheckLine(line.name, True, line.detail + f"; {len(hashes) - reached} will "
                         "not be told their new key (listed in the summary)")
    return line


async def check_api(settings: Settings) -> CheckLine:
    url = settings.api_base_url.rstrip("/") + settings.api_health_path
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http, \
                http.get(url) as answer:
            status = answer.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return CheckLine("api", False, f"{url} unreachable ({_short(exc)})",
                         "check API_BASE_URL and API_HEALTH_PATH; the verify step calls it")
    if status >= 500:
        return CheckLine("api", False, f"{url} answered {status}", "look at the api's logs",
                         blocking=False)
    return CheckLine("api", True, f"{url} answered {status}")


# --- the whole list -------------------------------------------------------------------------


async def preflight(settings: Settings) -> list[CheckLine]:
    """Every check, in the order a rollback meets them. Independent checks run concurrently."""
    revision, server_major, problem = await _target_facts(settings)
    independent: list[Awaitable[CheckLine | None]] = [
        check_slack(settings), check_bot_db(settings), check_pg_dump(settings, server_major),
        check_restart(settings), check_mailer(settings), check_directory(settings),
        check_api(settings), check_work_table(settings), check_approvers(settings),
    ]
    results = await asyncio.gather(*independent)
    slack, bot_db, pg_dump, restart, mailer, directory, api, work_table, approvers = results
    lines = [slack, approvers, bot_db, check_target_revision(settings, revision, problem), pg_dump,
             _writable("backup dir", settings.backup_dir, "set BACKUP_DIR to a writable folder"),
             restart, work_table, mailer, directory, api]
    return [line for line in lines if line is not None]


def _report(lines: list[CheckLine]) -> str:
    verdict = ("Something here would stop a rollback: fix the PROBLEM lines first."
               if stops_rollback(lines) else "Ready: nothing here would stop a rollback.")
    return "\n".join([*(line.text() for line in lines), verdict])


async def preflight_text(settings: Settings) -> str:
    return _report(await preflight(settings))


async def check(settings: Settings, out: TextIO) -> int:
    """Print every line and the verdict; 1 if anything would stop a rollback, else 0."""
    lines = await preflight(settings)
    print(_report(lines), file=out)
    return 1 if stops_rollback(lines) else 0


def check_command(args: object, settings: Settings) -> int:
    """`rollback-bot check`."""
    return asyncio.run(check(settings, sys.stdout))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]

