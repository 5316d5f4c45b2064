"""`rollback-bot`: the console entry point. Each subcommand is a thin call into the package."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from bot.settings import Settings, SettingsError, load_settings
from bot.terminal.exit_codes import EXIT_INTERRUPTED, EXIT_REFUSED

Command = Callable[[argparse.Namespace, Settings], int]
log = logging.getLogger("bot.cli")


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    settings.require("database_url")
    from bot.db.migrate import upgrade_to_head

    assert settings.database_url is not None
    revision = asyncio.run(upgrade_to_head(settings.database_url.get_secret_value()))
    print(f"bot database at revision {revision}")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from bot.serve import serve
    from bot.targets import load_targets

    asyncio.run(serve(load_targets(settings), http=args.http, host=args.host, port=args.port))
    return 0


def _plan(args: argparse.Namespace, settings: Settings) -> int:
    from bot.engine.dry_run import dry_run_from_settings, dry_run_text
    from bot.targets import load_targets
    from steps.registry import default_steps

    target = load_targets(settings).get(args.target)
    print(dry_run_text(target, asyncio.run(dry_run_from_settings(target, default_steps()))))
    return 0


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from bot.preflight import check_targets_command
    from bot.targets import load_targets

    return check_targets_command(load_targets(settings), args.target)


def _rehearse(args: argparse.Namespace, settings: Settings) -> int:
    from bot.terminal.rehearse import rehearse_command

    return rehearse_command(args, settings)


def _follow_ups(args: argparse.Namespace, settings: Settings) -> int:
    from bot.terminal.follow_ups import follow_ups_command

    return follow_ups_command(args, settings)


def _escalate(args: argparse.Namespace, settings: Settings) -> int:
    from bot.terminal.follow_ups import escalate_command

    return escalate_command(args, settings)


def _verify_log(args: argparse.Namespace, settings: Settings) -> int:
    from bot.terminal.verify_log import verify_log_command

    return verify_log_command(args, settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollback-bot",
        description="Phase 3 emergency rollback, two engineers approving every step.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    migrate = sub.add_parser("migrate", help="bring the bot's own database to the latest schema")
    migrate.set_defaults(handler=_migrate)
    serve = sub.add_parser("serve", help="run the Slack app (Socket Mode unless --http)")
    serve.add_argument("--http", action="store_true", help="serve POST /slack/events over HTTP")
    serve.add_argument("--host", default="0.0.0.0", help="HTTP bind address (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=3000, help="HTTP port (default 3000)")
    serve.set_defaults(handler=_serve)
    plan = sub.add_parser("plan", help="print every step's plan against the target; change nothing")
    plan.add_argument("--target", help="which target (TARGETS); needed when there are several")
    plan.set_defaults(handler=_plan)
    check = sub.add_parser("check", help="preflight: every dependency, ok or problem and its fix")
    check.add_argument("--target", help="check only this target (default: every one)")
    check.set_defaults(handler=_check)
    rehearse = sub.add_parser(
        "rehearse", help="a full rollback with the terminal as the front (sandbox by default)"
    )
    from bot.terminal.rehearse import add_rehearse_arguments

    add_rehearse_arguments(rehearse)
    rehearse.set_defaults(handler=_rehearse)
    from bot.terminal.follow_ups import add_escalate_arguments, add_follow_up_arguments

    follow = sub.add_parser("follow-ups", help="the last run's post-rollback actions: list, "
                            "own or close one")
    add_follow_up_arguments(follow)
    follow.set_defaults(handler=_follow_ups)
    escalate = sub.add_parser("escalate", help="escalate the active rollback: a high-severity "
                              "page and a mention of the escalation group")
    add_escalate_arguments(escalate)
    escalate.set_defaults(handler=_escalate)
    from bot.terminal.verify_log import add_verify_log_arguments

    verify = sub.add_parser("verify-log", help="recompute a run's incident log hash chain; "
                            "non-zero naming the first broken event")
    add_verify_log_arguments(verify)
    verify.set_defaults(handler=_verify_log)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        handler: Command = args.handler
        return handler(args, settings)
    except SettingsError as exc:
        print(f"rollback-bot: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
