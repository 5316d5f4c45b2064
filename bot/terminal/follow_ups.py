"""`rollback-bot escalate` and `rollback-bot follow-ups`: the follow-through from a terminal, for
when Slack is down or the work is done away from the thread. Recorded with the source
`terminal` and the name given, as the terminal's approvals are.

An escalation's page is delivered here before the command returns (nobody else may be running
a watcher while Slack is down); the Slack notices follow when a `serve` process sees the log.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, TextIO

from bot.domain.follow_ups import (
    FOLLOW_UP_COLUMNS,
    FollowUpAction,
    done_count,
    follow_up_rows,
    open_items,
    parse_item,
    text_table,
)
from bot.settings import Settings, SettingsError
from bot.terminal.identity import AskCode, IdentityRefused, TotpIdentity, read_code

if TYPE_CHECKING:
    from bot.engine.engine import Engine


def add_follow_up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("list", "own", "done"), default="list",
                        help="list the last run's post-rollback actions (default), own one, or "
                        "close one")
    parser.add_argument("item", nargs="?", default=None,
                        help="the item: its number (1-5) or name, e.g. root_cause")
    parser.add_argument("--as", dest="name", default=None, metavar="USER_ID",
                        help="who owns or closes it: your Slack user id, proven by your TOTP "
                        "code (BREAK_GLASS_TOTP_SECRETS), asked at the prompt")
    parser.add_argument("--target", default=None, metavar="T",
                        help="the target (TARGETS) whose runs these are; needed when there are "
                        "several")


def add_escalate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("why", nargs="+", help="why leadership is needed now")
    parser.add_argument("--as", dest="name", required=True, metavar="USER_ID",
                        help="who escalates: your Slack user id, proven by your TOTP code "
                        "(BREAK_GLASS_TOTP_SECRETS), asked at the prompt")
    parser.add_argument("--target", default=None, metavar="T",
                        help="the target (TARGETS) whose active rollback to escalate; needed "
                        "when there are several")


def _identity(settings: Settings, engine: Engine, out: TextIO, ask_code: AskCode) -> TotpIdentity:
    return TotpIdentity(settings.break_glass_totp_secrets, engine.sessions, out, ask_code)


async def follow_ups(settings: Settings, action: str, item_word: str | None, name: str | None,
                     out: TextIO, ask_code: AskCode = read_code) -> int:
    """List, own or close; owning and closing are done as `name` only once they typed their
    own TOTP code, as an approval at break-glass is."""
    from bot.db.repo_follow_ups import latest_run
    from bot.engine.follow_up_actions import act_on_follow_up
    from bot.startup import open_engine

    async with open_engine(settings) as engine:
        async with engine.sessions() as session:
            run = await latest_run(session, engine.target)
        if run is None:
            print("No rollback has run yet" + ("" if engine.target == "default" else
                                               f" on {engine.target}") + ".", file=out)
            return 1
        run_id = str(run.id)
        if action != "list":
            item = parse_item(item_word or "")
            if item is None or not name:
                raise SettingsError("say which item (1-5) and who you are (--as USER_ID)")
            try:
                async with _identity(settings, engine, out, ask_code).proven(
                        name, f"{action} follow-up {item.value}") as actor:
                    answer = await act_on_follow_up(engine, actor, run_id, item,
                                                    FollowUpAction(action))
            except IdentityRefused as exc:
                print(f"refused: {exc}", file=out)
                return 1
            print(("" if answer.accepted else "refused: ") + answer.message, file=out)
            if not answer.accepted:
                return 1
        view = await engine.run_view(run_id)
        if not view.follow_ups:
            print(f"Rollback {run_id[:8]} is {view.status.value}: its post-rollback actions "
                  "open when it ends.", file=out)
            return 0
        print(f"Rollback {run_id[:8]} ({view.status.value}): post-rollback actions "
              f"{done_count(view.follow_ups)}/{len(view.follow_ups)} done, "
              f"{len(open_items(view.follow_ups))} open", file=out)
        for line in text_table(FOLLOW_UP_COLUMNS, follow_up_rows(view.follow_ups)):
            print(f"  {line}", file=out)
    return 0


async def escalate(settings: Settings, why: str, name: str, out: TextIO,
                   ask_code: AskCode = read_code) -> int:
    from bot.engine.follow_through import FollowThrough
    from bot.engine.follow_up_actions import escalate as escalate_run
    from bot.paging.events_api import pager_from_settings
    from bot.startup import open_engine

    async with open_engine(settings) as engine:
        try:
            async with _identity(settings, engine, out, ask_code).proven(
                    name, "escalate") as actor:
                answer = await escalate_run(engine, actor, None, why)
        except IdentityRefused as exc:
            print(f"refused: {exc}", file=out)
            return 1
        print(("" if answer.accepted else "refused: ") + answer.message, file=out)
        if not answer.accepted or answer.run_id is None:
            return 1
        pager = pager_from_settings(settings)
        try:
            await FollowThrough(engine, pager).deliver_pages(answer.run_id)
        finally:
            if pager is not None:
                await pager.close()
    return 0


def target_of(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings of the target `--target` names (the only one when there is one); an
    unknown target names the known ones, a refused one says what is missing."""
    from bot.targets import load_targets

    return load_targets(settings).get(getattr(args, "target", None))


def follow_ups_command(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(follow_ups(target_of(args, settings), args.action, args.item, args.name,
                                  sys.stdout))


def escalate_command(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(escalate(target_of(args, settings), " ".join(args.why), args.name,
                                sys.stdout))
