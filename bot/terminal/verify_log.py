"""`rollback-bot verify-log [RUN] [--head HASH]`: recompute a run's incident log chain.

For the RCA, or for anyone who doubts the bot's database: every event's hash is recomputed in
Python from the rows (`bot.domain.log_chain`), not asked of the database that stored them. With
`--head` (the hash the Slack summary or the exported timeline shows), the log must also pass
through that hash: a log rewritten from scratch, with a chain recomputed to match, does not.

Exit status: 0 intact; 1 broken (the first broken event is named), or the head is not in it;
2 refused (no such run, settings).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, TextIO

from bot.domain.log_chain import ChainVerdict, verify_chain
from bot.settings import Settings, SettingsError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

EXIT_INTACT = 0
EXIT_BROKEN = 1


def add_verify_log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", default=None, metavar="RUN",
                        help="the run's id or its first characters (default: the last run)")
    parser.add_argument("--head", default=None, metavar="HASH",
                        help="a head hash kept outside the database (the summary message, the "
                        "exported timeline; its first 16 characters suffice): the log must "
                        "pass through it")
    parser.add_argument("--target", default=None, metavar="T",
                        help="the last run of this target (TARGETS); with RUN, the run must be "
                        "this target's")


async def _resolve_run(session: AsyncSession, word: str | None,
                       target: str | None = None) -> str:
    """The run `word` names (the last one when None), of `target` when one is given."""
    from bot.db import repo_events, repo_runs
    from bot.db.repo_follow_ups import latest_run

    if word is None:
        run = await latest_run(session, target)
        if run is None:
            raise SettingsError("no rollback has run yet" + (f" on {target}" if target else "")
                                + ": nothing to verify")
        return str(run.id)
    matches = await repo_events.runs_matching(session, word)
    if not matches:
        raise SettingsError(f"no run whose id starts with {word!r}")
    if len(matches) > 1:
        raise SettingsError(f"{word!r} names several runs ({', '.join(m[:8] for m in matches)}"
                            "): give more of the id")
    found = await repo_runs.get_run(session, matches[0])
    if target is not None and found is not None and found.target != target:
        raise SettingsError(f"run {matches[0][:8]} is a rollback on {found.target}, not on "
                            f"{target}")
    return matches[0]


def head_position(verdict: ChainVerdict, head: str) -> int | None:
    """The seq of the event whose hash starts with `head` (at least 16 characters)."""
    wanted = head.strip().lower()
    if len(wanted) < 16:
        return None
    return next((seq for seq, digest in enumerate(verdict.hashes, start=1)
                 if digest.startswith(wanted)), None)


async def verify_log(settings: Settings, run_word: str | None, head: str | None,
                     out: TextIO, target: str | None = None) -> int:
    from bot.db import repo_events
    from bot.db.session import make_engine, make_sessionmaker

    settings.require("database_url")
    assert settings.database_url is not None
    if head is not None and len(head.strip()) < 16:
        raise SettingsError("--head needs at least 16 characters of the hash")
    db = make_engine(settings.database_url.get_secret_value())
    try:
        async with make_sessionmaker(db)() as session:
            run_id = await _resolve_run(session, run_word, target)
            events = await repo_events.chained_events(session, run_id)
            stored_head = await repo_events.chain_head(session, run_id)
    finally:
        await db.dispose()
    verdict = verify_chain(events, stored_head)
    if verdict.broken is not None:
        print(f"run {run_id}: BROKEN at {verdict.broken.describe()}; the {verdict.events} "
              "events before it are intact", file=out)
        return EXIT_BROKEN
    print(f"run {run_id}: {verdict.events} events, chain intact, head {verdict.head}", file=out)
    if head is not None:
        seq = head_position(verdict, head)
        if seq is None:
            print(f"head {head.strip()} is NOT in this log: the log was rewritten since that "
                  "copy was made, or the hash belongs to another run", file=out)
            return EXIT_BROKEN
        later = verdict.events - seq
        print(f"head {head.strip()} is event seq {seq}"
              + (f"; {later} events were written after it" if later else ", the last one"),
              file=out)
    return EXIT_INTACT


def verify_log_command(args: argparse.Namespace, settings: Settings) -> int:
    target = None
    if args.target is not None:
        from bot.targets import load_targets

        target = load_targets(settings).get(args.target).target_name  # known, or named
    return asyncio.run(verify_log(settings, args.run, args.head, sys.stdout, target))
