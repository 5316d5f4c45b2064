"""The target's side of `check`: its database, Alembic revision, pg_dump, step 4's schema, and
who would be emailed. Every fact comes from the probe the step itself uses (`steps/`), so the
preflight and the rollback cannot disagree.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg

from bot.domain.step_protocol import StepError
from bot.preflight.lines import TIMEOUT, CheckLine, short
from bot.settings import Settings
from bot.urls import redacted
from steps.backup import pg_dump_major, pg_dump_too_old
from steps.directory import load_directory
from steps.downgrade import RevisionVerdict, target_revision
from steps.rotate_keys import WORK_SCHEMA
from steps.target_db import connect, owner_hashes, schema_privilege_on, server_version_major

DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class TargetFacts:
    verdict: RevisionVerdict | None  # step 2's verdict on the revision; None if unreachable
    server_major: int  # 0 when unknown
    problem: str | None  # why the target could not be read


async def target_facts(settings: Settings) -> TargetFacts:
    url = settings.target_database_url.get_secret_value()
    try:
        async with asyncio.timeout(TIMEOUT * 2):
            verdict = await target_revision(settings)
            major = await server_version_major(url)
    except DATABASE_ERRORS as exc:
        return TargetFacts(None, 0, f"{redacted(url)} unreachable: {short(exc)}")
    return TargetFacts(verdict, major, None)


def check_target_revision(settings: Settings, facts: TargetFacts) -> CheckLine:
    url = redacted(settings.target_database_url.get_secret_value())
    verdict = facts.verdict
    if facts.problem is not None or verdict is None:
        return CheckLine("target database", False, facts.problem or "not read",
                         "start the target database or correct TARGET_DATABASE_URL")
    head = settings.phase3_revisions[-1] if settings.phase3_revisions else "?"
    if verdict.already_done:
        return CheckLine("target database", True, f"{url} already at Phase 2 "
                         f"({verdict.current}): the downgrade will be skipped")
    if verdict.refused:
        return CheckLine("target database", False, f"{url}: step 2 would refuse it: "
                         f"{verdict.refusal}",
                         "the downgrade refuses any other revision: inspect alembic_version by "
                         "hand (PHASE3_REVISIONS lists the chain the bot knows)")
    if verdict.current == head:
        return CheckLine("target database", True, f"{url} at Phase 3 head {head}")
    return CheckLine("target database", True, f"{url} at Phase 3 revision {verdict.current}: "
                     f"the downgrade undoes {', '.join(verdict.undo)}")


async def check_work_table(settings: Settings) -> CheckLine | None:
    """Step 4 makes the new keys in a work table of its own schema in the target."""
    try:
        async with connect(settings.target_database_url.get_secret_value(), TIMEOUT) as conn:
            who = await schema_privilege_on(conn, WORK_SCHEMA)
    except DATABASE_ERRORS:
        return None  # the target database line says why
    if who.allowed:
        return CheckLine("key work table", True,
                         f"{who.user} may create the schema {WORK_SCHEMA} for step 4's work table")
    return CheckLine("key work table", False,
                     f"{who.user} may not create the schema {WORK_SCHEMA} in {who.database}: "
                     "step 4 makes the new keys in a work table there",
                     f'GRANT CREATE ON DATABASE "{who.database}" TO "{who.user}" (or create the '
                     f"schema {WORK_SCHEMA} owned by {who.user})")


async def check_pg_dump(settings: Settings, server_major: int) -> CheckLine:
    try:
        client_major = await pg_dump_major(settings.pg_dump_path, TIMEOUT)
    except StepError as exc:
        return CheckLine("pg_dump", False, f"{settings.pg_dump_path} cannot run: {short(exc)}",
                         "install the PostgreSQL client tools or set PG_DUMP_PATH")
    if server_major and pg_dump_too_old(client_major, server_major):
        return CheckLine("pg_dump", False,
                         f"pg_dump {client_major} is older than the target server {server_major}",
                         f"install pg_dump {server_major} or newer and point PG_DUMP_PATH at it")
    versus = f" (server {server_major})" if server_major else ""
    return CheckLine("pg_dump", True, f"{settings.pg_dump_path} version {client_major}{versus}")


async def check_directory(settings: Settings) -> CheckLine:
    """Step 5's own directory load: the same source (the query when both are set), the same
    refused rows, and the clients it would reach among the target's owners."""
    if settings.client_directory is None and not settings.client_directory_query:
        return CheckLine("client directory", False, "neither CLIENT_DIRECTORY nor "
                         "CLIENT_DIRECTORY_QUERY is set: no client could be emailed its key",
                         "set CLIENT_DIRECTORY to a CSV name,email,api_key_sha256")
    source = "CLIENT_DIRECTORY_QUERY" if settings.client_directory_query else \
        f"CLIENT_DIRECTORY {settings.client_directory}"
    try:
        async with asyncio.timeout(TIMEOUT * 2):
            directory = await load_directory(settings)
    except (StepError, *DATABASE_ERRORS) as exc:
        return CheckLine("client directory", False, f"{source} cannot be read: {short(exc)}",
                         "fix CLIENT_DIRECTORY (CSV name,email,api_key_sha256) or the query")
    try:
        async with asyncio.timeout(TIMEOUT * 2):
            hashes: set[str] | None = await owner_hashes(
                settings.target_database_url.get_secret_value())
    except DATABASE_ERRORS:
        hashes = None
    if hashes is None:
        detail = (f"{len(directory.contacts)} contacts from {source} (target not readable, so "
                  "not matched against the clients)")
    else:
        reached = len(hashes & directory.contacts.keys())
        detail = f"{reached} of {len(hashes)} client hashes have a contact ({source})"
        if reached < len(hashes):
            detail += (f"; {len(hashes) - reached} will not be told their new key (listed in "
                       "the summary)")
    if directory.problems:
        return CheckLine("client directory", False,
                         f"{detail}; {len(directory.problems)} rows refused, never emailed",
                         "correct the rows named above: step 5 skips them the same way",
                         blocking=False, notes=tuple(directory.problems))
    return CheckLine("client directory", True, detail)
