"""`rollback-bot`: the console entry point. Each subcommand is a thin call into the package."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from bot.settings import Settings, SettingsError, load_settings

Command = Callable[[argparse.Namespace, Settings], int]


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from bot.db.migrate import upgrade_to_head

    settings.require("database_url")
    assert settings.database_url is not None
    revision = asyncio.run(upgrade_to_head(settings.database_url.get_secret_value()))
    print(f"bot database at revision {revision}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollback-bot",
        description="Phase 3 emergency rollback, two engineers approving every step.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    migrate = sub.add_parser("migrate", help="bring the bot's own database to the latest schema")
    migrate.set_defaults(handler=_migrate)
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
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
