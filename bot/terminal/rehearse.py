"""`rollback-bot rehearse`: the real engine and the six real steps, driven from the terminal.

With no target configured it stands up the sandbox (bot/rehearsal) and runs the whole rollback on
it; with a target configured and `--real`, it is the break-glass front when Slack is down.
Everything a rehearsal produces lands in one folder: backups, outbox, timeline, transcript, logs.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pydantic import SecretStr

from bot.charts.timeline_png import render_png
from bot.domain.states import RunStatus
from bot.domain.timeline import timeline_markdown
from bot.domain.timeline_chart import chart_layout
from bot.domain.views import RunView
from bot.settings import KeyModel, Settings, SettingsError
from bot.terminal.approvals import NamedApprovers, PromptApprovers
from bot.terminal.decisions import ApprovalSource, FrontError
from bot.terminal.exit_codes import EXIT_CODES_HELP, EXIT_NOT_COMPLETED, exit_code
from bot.terminal.identity import AskCode, Clock, TotpIdentity, read_code
from bot.terminal.summary import summary_text

if TYPE_CHECKING:
    from bot.engine.engine import Engine
    from bot.engine.follow_through import FollowThrough
    from bot.rehearsal.sandbox import Sandbox
    from bot.terminal.front import TerminalFront

DEFAULT_REASON = "rehearsal of the Phase 3 emergency rollback"


@dataclass
class RehearsalOptions:
    approvers: tuple[str, ...] = ()
    initiator: str = "operator"
    reason: str = DEFAULT_REASON
    clients: int = 20
    folder: Path | None = None
    keep: bool = False  # leave the sandbox's databases and api running afterwards
    use_docker: bool | None = None  # None: a container when an engine answers
    key_model: KeyModel = KeyModel.PER_CLIENT  # service: one door key, as the real service


@dataclass
class RehearsalResult:
    view: RunView | None
    folder: Path
    transcript: Path
    timeline: Path | None
    settings: Settings
    sandbox: Sandbox | None = None  # still standing when `keep` was asked for

    @property
    def completed(self) -> bool:
        return self.view is not None and self.view.status is RunStatus.COMPLETED


class Tee:
    """Writes to the terminal and the transcript file at once."""

    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def _log_to_file(path: Path) -> tuple[logging.Handler, list[logging.Handler]]:
    """The bot's logs go to the folder (scanned for keys by the tests), not over the transcript.

    Returns the new handler and the console handlers it replaced, for `_restore_logging`.
    """
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    removed: list[logging.Handler] = [
        old for old in root.handlers if isinstance(old, logging.StreamHandler)
        and getattr(old, "stream", None) in (sys.stderr, sys.stdout)
    ]
    for old in removed:
        root.removeHandler(old)
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler, removed


def _restore_logging(handler: logging.Handler, removed: list[logging.Handler]) -> None:
    root = logging.getLogger()
    root.removeHandler(handler)
    handler.close()
    for old in removed:
        root.addHandler(old)


@dataclass(frozen=True)
class BreakGlass:
    """`rehearse --real`: who may act (the configured approvers, by user id) and, to attach to
    a run started in Slack, why the terminal takes it over."""

    approver_ids: tuple[str, ...]
    take_over: str | None = None
    # Each engineer's TOTP secret (BREAK_GLASS_TOTP_SECRETS): with it, every approval waits
    # for its engineer's own code (bot/terminal/identity.py).
    secrets: Mapping[str, SecretStr] | None = None
    ask_code: AskCode = read_code
    clock: Clock = time.time


def check_break_glass(settings: Settings, approvers: list[str], initiator: str) -> None:
    """The two-person rule at the terminal, as in Slack: only configured approvers, two
    distinct ones, never the initiator."""
    configured = set(settings.approver_user_ids)
    where = "APPROVER_USER_IDS" if settings.target_name == "default" else \
        f"APPROVER_USER_IDS of target {settings.target_name}"
    if not configured:
        raise SettingsError(f"--real needs {where}: the terminal accepts the same "
                            "engineers as Slack, by user id")
    unknown = [name for name in approvers if name not in configured]
    if unknown:
        raise SettingsError(f"not configured approvers ({where}): {', '.join(unknown)}")
    if initiator not in configured:
        raise SettingsError(f"--initiator {initiator} is not a configured approver "
                            f"({where}); give your user id")
    if approvers and len(set(approvers)) < 2:
        raise SettingsError("two different approvers are needed (--approver ID twice)")
    if initiator in approvers:
        raise SettingsError(f"{initiator} starts or operates this rollback and cannot approve it")
    secrets = settings.break_glass_totp_secrets
    if not secrets:
        raise SettingsError("--real needs BREAK_GLASS_TOTP_SECRETS (Slack user id = base32 "
                            "secret): each engineer proves who they are with their own code")
    # The initiator too: starting, taking over, retrying and aborting are acts of theirs.
    missing = [name for name in dict.fromkeys([initiator, *approvers]) if name not in secrets]
    if missing:
        raise SettingsError(f"no TOTP secret for {', '.join(missing)} "
                            "(BREAK_GLASS_TOTP_SECRETS): they cannot act from a terminal")


async def drive(settings: Settings, out: TextIO, approvals: ApprovalSource, initiator: str,
                reason: str, glass: BreakGlass | None = None) -> RunView:
    """Run one rollback to its end through the terminal front on the configured bot DB."""
    from bot.startup import open_engine

    async with open_engine(settings) as engine, following_through(engine, out) as follow:
        await engine.recover(watch=False)
        return await follow_or_start(engine, out, approvals, initiator, reason, glass, follow)


async def follow_or_start(engine: Engine, out: TextIO, approvals: ApprovalSource,
                          initiator: str, reason: str, glass: BreakGlass | None = None,
                          follow: FollowThrough | None = None) -> RunView:
    """Start a rollback, or follow the active one; a run started in Slack is attached to only
    with a take-over reason (recorded in the incident log, shown in the thread)."""
    from bot.domain.events import Source
    from bot.terminal.front import TerminalFront, configured_actor, terminal_actor

    actor_for = configured_actor(glass.approver_ids) if glass else terminal_actor
    identity = None if glass is None or glass.secrets is None else \
        TotpIdentity(glass.secrets, engine.sessions, out, glass.ask_code,
                     glass.clock)
    front = TerminalFront(engine, out, approvals, actor_for, operator=initiator,
                          identity=identity)
    active = await engine.active_run_id()
    if active is None:
        return await _closing(front, follow, await front.run(initiator, reason))
    if glass is not None and await engine.run_source(active) is not Source.TERMINAL:
        if not glass.take_over:
            raise FrontError(f"the active rollback {active} was started in Slack: attach to it "
                             "from the terminal only with --take-over <reason>")
        reason = glass.take_over
        taken = await front.act_as(initiator, "take over the rollback",
                                   lambda actor: engine.take_over(active, actor, reason))
        if taken is None:
            raise FrontError(f"take-over by {initiator} refused: no valid code")
        answer = taken
        if not answer.accepted:
            raise FrontError(f"take-over refused: {answer.message}")
        print(f"Took over the active rollback {active}: {glass.take_over}", file=out)
    else:
        print(f"Following the active rollback {active}.", file=out)
    return await _closing(front, follow, await front.follow(active))


async def _closing(front: TerminalFront, follow: FollowThrough | None, view: RunView) -> RunView:
    """The closing resolve page and the checklist, before we go."""
    if follow is not None:
        await follow.pass_once([view.run_id])
        await front.print_new(view.run_id)
    return view


@asynccontextmanager
async def following_through(engine: Engine, out: TextIO) -> AsyncIterator[FollowThrough]:
    """Pages and approval nudges beside the terminal front, as `serve` runs them."""
    from bot.domain.paging_policy import paging_status
    from bot.engine.follow_through import FollowThrough
    from bot.paging.events_api import pager_from_settings

    settings = engine.settings
    pager = pager_from_settings(settings)
    print(paging_status(pager is not None, settings.page_on, settings.pagerduty_events_url),
          file=out)
    follow = FollowThrough(engine, pager)
    follow.start()
    try:
        yield follow
    finally:
        await follow.stop()
        if pager is not None:
            await pager.close()


async def finish(view: RunView, settings: Settings, timeline: Path, out: TextIO) -> None:
    """Write the markdown timeline and its picture beside it (the same name, `.png`), and
    print the post-mortem summary."""
    from bot.db import repo_events
    from bot.db.session import make_engine, make_sessionmaker

    assert settings.database_url is not None
    db = make_engine(settings.database_url.get_secret_value())
    try:
        async with make_sessionmaker(db)() as session:
            events = await repo_events.all_events(session, view.run_id)
    finally:
        await db.dispose()
    await asyncio.to_thread(timeline.write_text, timeline_markdown(view, events), "utf-8")
    picture = await asyncio.to_thread(render_png, chart_layout(view, events))
    await asyncio.to_thread(timeline.with_suffix(".png").write_bytes, picture)
    print("", summary_text(view), sep="\n", file=out)


async def rehearse(options: RehearsalOptions, base: Settings, out: TextIO,
                   approvals: ApprovalSource | None = None) -> RehearsalResult:
    """Stand up the sandbox, run the whole rollback on it, write every artefact to one folder.

    Approvals come from `approvals`, else from the named `options.approvers`.
    """
    source = approvals or NamedApprovers(options.approvers)
    from bot.rehearsal.sandbox import stand_up

    folder = (options.folder or Path("demo") / datetime.now().strftime("%Y%m%d-%H%M%S")).resolve()
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    handler, removed = _log_to_file(folder / "logs" / "bot.log")
    transcript_path = folder / "transcript.txt"
    with transcript_path.open("w", encoding="utf-8") as transcript:
        tee: TextIO = Tee(out, transcript)  # type: ignore[assignment]
        sandbox = await stand_up(base, folder, options.clients, tee, options.use_docker,
                                 options.key_model)
        result = RehearsalResult(None, folder, transcript_path, None, sandbox.settings)
        try:
            view = await drive(sandbox.settings, tee, source, options.initiator,
                               options.reason)
            result.view = view
            result.timeline = folder / f"timeline-{view.run_id[:8]}.md"
            await finish(view, sandbox.settings, result.timeline, tee)
            await sandbox.collect_logs()
        finally:
            if options.keep:
                result.sandbox = sandbox
            else:
                await sandbox.tear_down()
            _restore_logging(handler, removed)
        _print_artefacts(result, tee)
    return result


def _print_artefacts(result: RehearsalResult, out: TextIO) -> None:
    s = result.settings
    emails = sorted(s.outbox_dir.glob("*.eml")) if s.outbox_dir.exists() else []
    backups = sorted(s.backup_dir.glob("*.dump")) if s.backup_dir.exists() else []
    print("", "Artefacts of this rehearsal:", sep="\n", file=out)
    print(f"  backup:     {backups[-1] if backups else '(none) in ' + str(s.backup_dir)}",
          file=out)
    print(f"  outbox:     {s.outbox_dir} ({len(emails)} emails)", file=out)
    if s.service_env_file is not None:
        print(f"  door key:   API_KEY in {s.service_env_file} (previous file kept beside it)",
              file=out)
    print(f"  timeline:   {result.timeline or '(none)'}", file=out)
    if result.timeline is not None:
        print(f"  picture:    {result.timeline.with_suffix('.png')}", file=out)
    print(f"  transcript: {result.transcript}", file=out)
    print(f"  logs:       {result.folder / 'logs'}", file=out)


# --- the command ----------------------------------------------------------------------------


def add_rehearse_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXIT_CODES_HELP
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--approver", action="append", default=[], metavar="NAME",
                        help="an engineer who approves every step (give it twice); "
                        "without it, approvers are asked at a prompt")
    parser.add_argument("--initiator", default=None, metavar="NAME",
                        help="who starts the rollback (default: your login name)")
    parser.add_argument("--reason", default=DEFAULT_REASON, help="why the rollback is run")
    parser.add_argument("--clients", type=int, default=20,
                        help="sandbox clients to seed (default 20, one without a contact)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder for every artefact (default ./demo/<timestamp>/)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the sandbox databases and api running afterwards")
    parser.add_argument("--no-docker", action="store_true",
                        help="run the sandbox api as a local process even if Docker answers")
    parser.add_argument("--key-model", choices=[m.value for m in KeyModel], default=None,
                        help="sandbox only: per_client (the runbook: a key per client, the "
                        "default) or service (the real service: one door key API_KEY in its "
                        ".env, installed and restarted by step 4)")
    parser.add_argument("--targets", default=None, metavar="REHEARSAL,TARGET",
                        help="sandbox only: two targets on one bot database, e.g. "
                        "staging,production: rehearse on the first, show the second's plan "
                        "quoting that rehearsal, then roll the second back")
    parser.add_argument("--sandbox", action="store_true",
                        help="rehearse on a fresh sandbox even if TARGET_DATABASE_URL is set")
    parser.add_argument("--real", action="store_true",
                        help="break-glass: run the rollback on the CONFIGURED target "
                        "(TARGET_DATABASE_URL) from this terminal, e.g. while Slack is down; "
                        "approvers and initiator are user ids from APPROVER_USER_IDS")
    parser.add_argument("--target", default=None, metavar="T",
                        help="with --real and TARGETS: the target to roll back; its own "
                        "approvers (T__APPROVER_USER_IDS, else APPROVER_USER_IDS) apply")
    parser.add_argument("--take-over", default=None, metavar="REASON",
                        help="with --real: attach to a rollback started in Slack (recorded in "
                        "the incident log and shown in its thread)")


def _initiator(args: argparse.Namespace) -> str:
    name: str = args.initiator or getpass.getuser() or "operator"
    return name if name not in args.approver else f"{name}-initiator"


def rehearse_command(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "target", None) and not args.real:
        raise SettingsError("--target goes with --real (sandboxes take --targets)")
    if args.real and settings.targets:
        from bot.targets import load_targets

        settings = load_targets(settings).get(args.target)  # its own approvers, its database
    target_configured = "target_database_url" in settings.model_fields_set
    if args.sandbox and args.real:
        raise SettingsError("--sandbox and --real exclude each other")
    if target_configured and not (args.real or args.sandbox):
        raise SettingsError(
            "TARGET_DATABASE_URL is configured: `rehearse` would act on that database. Unset it "
            "for a sandbox rehearsal, or pass --real to roll back the configured target")
    if args.real and args.key_model:
        raise SettingsError("--key-model is for the sandbox; for the configured target set "
                            "KEY_MODEL")
    if args.real and not target_configured:
        raise SettingsError("--real needs TARGET_DATABASE_URL (the database to roll back)")
    if args.targets and args.real:
        raise SettingsError("--targets is for sandboxes; --real rolls back the configured one")
    if getattr(args, "take_over", None) and not args.real:
        raise SettingsError("--take-over goes with --real")
    if args.real:
        check_break_glass(settings, args.approver, args.initiator or getpass.getuser())
    approvals: ApprovalSource
    if args.approver:
        approvals = NamedApprovers(args.approver)
    elif sys.stdin.isatty():
        approvals = PromptApprovers(sys.stdout)
    else:
        raise SettingsError("give two approvers (--approver NAME twice) or run at a terminal")
    try:
        if args.real:
            print("⚠ LOSSY ROLLBACK of the configured target, from the terminal.")
            timeline = Path.cwd() / f"rollback-{datetime.now():%Y%m%d-%H%M%S}-timeline.md"
            glass = BreakGlass(tuple(settings.approver_user_ids), args.take_over,
                               settings.break_glass_totp_secrets)
            view = asyncio.run(_real(settings, approvals, args.initiator or getpass.getuser(),
                                     args.reason, timeline, glass))
            return exit_code(view)
        options = RehearsalOptions(
            approvers=tuple(args.approver), initiator=_initiator(args), reason=args.reason,
            clients=args.clients, folder=args.dir, keep=args.keep,
            use_docker=False if args.no_docker else None,
            key_model=KeyModel(args.key_model or KeyModel.PER_CLIENT))
        if args.targets:
            from bot.terminal.rehearse_targets import rehearse_targets, target_pair

            views = asyncio.run(rehearse_targets(options, settings, target_pair(args.targets),
                                                 sys.stdout, approvals))
            codes = [exit_code(view) for view in views]
            return EXIT_NOT_COMPLETED if EXIT_NOT_COMPLETED in codes or len(codes) < 2 \
                else max(codes)
        result = asyncio.run(rehearse(options, settings, sys.stdout, approvals))
    except (FrontError, ValueError) as exc:
        print(f"rollback-bot rehearse: {exc}", file=sys.stderr)
        return EXIT_NOT_COMPLETED
    return exit_code(result.view)


async def _real(settings: Settings, approvals: ApprovalSource, initiator: str,
                reason: str, timeline: Path, glass: BreakGlass) -> RunView:
    view = await drive(settings, sys.stdout, approvals, initiator, reason, glass)
    await finish(view, settings, timeline, sys.stdout)
    print(f"timeline: {timeline} (picture: {timeline.with_suffix('.png')})")
    return view
