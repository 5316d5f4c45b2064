"""`rollback-bot check`: one line per dependency a rollback needs, each with the fix for a problem.

Run it before an incident (and at its start): a rollback that stops halfway because the Docker
engine or the mail server was never reachable is worse than one that never started. Nothing here
changes anything: no mail is sent, no container touched, no row written. Every fact is asked
through the probe the step itself uses, so `check` says what the rollback will find.

One module per family of dependencies: `target` (database, revision, pg_dump, step 4's schema,
the client directory), `services` (Slack, the bot's database, Docker, the api), `mail`,
`door_key` (KEY_MODEL=service's installer and door key, and the service's Redis).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TextIO

from bot.preflight.door_key import service_lines
from bot.preflight.lines import CheckLine, stops_rollback, writable
from bot.preflight.mail import check_mailer
from bot.preflight.paging import check_paging
from bot.preflight.services import (
    check_api,
    check_approvers,
    check_bot_db,
    check_restart,
    check_slack,
)
from bot.preflight.target import (
    TargetFacts,
    check_directory,
    check_pg_dump,
    check_target_revision,
    check_work_table,
    target_facts,
)
from bot.settings import Settings
from bot.targets import Targets

__all__ = [
    "CheckLine",
    "TargetFacts",
    "check",
    "check_api",
    "check_approvers",
    "check_bot_db",
    "check_command",
    "check_directory",
    "check_mailer",
    "check_paging",
    "check_pg_dump",
    "check_restart",
    "check_slack",
    "check_target_revision",
    "check_targets",
    "check_targets_command",
    "check_work_table",
    "preflight",
    "preflight_text",
    "stops_rollback",
    "target_facts",
]


async def preflight(settings: Settings) -> list[CheckLine]:
    """Every check, in the order a rollback meets them. Independent checks run concurrently."""
    facts = await target_facts(settings)
    independent: list[Awaitable[CheckLine | None]] = [
        check_slack(settings), check_bot_db(settings),
        check_pg_dump(settings, facts.server_major), check_restart(settings),
        check_mailer(settings), check_directory(settings), check_api(settings),
        check_work_table(settings), check_approvers(settings),
    ]
    results, door_and_cache = await asyncio.gather(asyncio.gather(*independent),
                                                   service_lines(settings))
    slack, bot_db, pg_dump, restart, mailer, directory, api, work_table, approvers = results
    lines = [slack, approvers, bot_db, check_target_revision(settings, facts), pg_dump,
             writable("backup dir", settings.backup_dir, "set BACKUP_DIR to a writable folder"),
             restart, work_table, *door_and_cache, mailer, directory, api,
             check_paging(settings)]
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
    """`rollback-bot check` on one target's settings."""
    return asyncio.run(check(settings, sys.stdout))


async def check_targets(targets: Targets, only: str | None, out: TextIO) -> int:
    """Every configured target in turn (or `only`), each under its name; a refused target is
    a PROBLEM line saying what is missing, and the others are still checked."""
    if not targets.several and only is None:
        return await check(targets.get(None), out)
    names = (targets.get(only).target_name,) if only is not None else targets.names
    worst = 0
    for name in names:
        print(f"— target {name} —", file=out)
        if name in targets.refused:
            print(CheckLine(f"target {name}", False, f"refused: {targets.refused[name]}",
                            f"set the missing {name.upper()}__… settings").text(), file=out)
            worst = 1
            continue
        worst = max(worst, await check(targets.get(name), out))
    return worst


def check_targets_command(targets: Targets, only: str | None) -> int:
    """`rollback-bot check [--target T]`."""
    return asyncio.run(check_targets(targets, only, sys.stdout))
