"""`rollback-bot rehearse --sandbox --targets staging,production`: the runbook's order on two
sandboxes served by one bot database — rehearse on the first target, then show the second
target's plan, which quotes that rehearsal (bot/domain/rehearsal.py), then roll the second back.
Each target has its own sandbox (database, api, outbox); the bot database is shared, as one
bot serving both would share it. `make demo-targets` runs it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TextIO

from bot.domain.views import RunView
from bot.rehearsal.sandbox import Sandbox, stand_up
from bot.settings import Settings, SettingsError
from bot.terminal.decisions import ApprovalSource
from bot.terminal.rehearse import RehearsalOptions, Tee, drive, finish


def target_pair(value: str) -> tuple[str, str]:
    names = tuple(n.strip().lower() for n in value.split(",") if n.strip())
    if len(names) != 2 or names[0] == names[1]:
        raise SettingsError("--targets takes two names: the rehearsal target, then the one it "
                            "rehearses for (e.g. staging,production)")
    return names[0], names[1]


def _banner(out: TextIO, text: str) -> None:
    print("", "═" * 78, f"  {text}", "═" * 78, sep="\n", file=out, flush=True)


async def _rehearse_one(settings: Settings, options: RehearsalOptions, approvals: ApprovalSource,
                        folder: Path, out: TextIO) -> RunView:
    view = await drive(settings, out, approvals, options.initiator, options.reason)
    await finish(view, settings, folder / f"timeline-{view.run_id[:8]}.md", out)
    return view


async def _plan_text(settings: Settings) -> str:
    from bot.engine.dry_run import dry_run_text
    from bot.startup import open_engine

    async with open_engine(settings) as engine:  # the same dry run `/rollback-phase3 plan` makes
        return dry_run_text(settings, await engine.dry_run_report())


async def rehearse_targets(options: RehearsalOptions, base: Settings, targets: tuple[str, str],
                           out: TextIO, approvals: ApprovalSource) -> list[RunView]:
    """Both rehearsals' ends, in order; every artefact under one folder, a subfolder each."""
    first, second = targets
    folder = (options.folder or Path("demo") / datetime.now().strftime("%Y%m%d-%H%M%S")
              ).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    views: list[RunView] = []
    with (folder / "transcript.txt").open("w", encoding="utf-8") as transcript:
        tee: TextIO = Tee(out, transcript)  # type: ignore[assignment]
        _banner(tee, f"Sandboxes: {first} and {second}, one bot database")
        sandboxes: list[Sandbox] = []
        try:
            rehearsal = await stand_up(base, folder / first, options.clients, tee,
                                       options.use_docker, options.key_model)
            sandboxes.append(rehearsal)
            assert rehearsal.settings.database_url is not None
            rehearsed = await stand_up(base, folder / second, options.clients, tee,
                                       options.use_docker, options.key_model,
                                       bot_url=rehearsal.settings.database_url.get_secret_value())
            sandboxes.append(rehearsed)
            on_first = rehearsal.settings.for_target(first)
            on_second = rehearsed.settings.model_copy(
                update={"rehearsal_target": first}).for_target(second)
            _banner(tee, f"1. The rehearsal on {first}")
            views.append(await _rehearse_one(on_first, options, approvals, folder / first, tee))
            _banner(tee, f"2. {second}'s plan, before its rollback: it quotes the rehearsal")
            print(await _plan_text(on_second), file=tee, flush=True)
            _banner(tee, f"3. The rollback on {second}")
            views.append(await _rehearse_one(on_second, options, approvals, folder / second,
                                             tee))
            for sandbox in sandboxes:
                await sandbox.collect_logs()
        finally:
            if not options.keep:
                for sandbox in reversed(sandboxes):  # the owner of the bot database last
                    await sandbox.tear_down()
        print("", f"Artefacts: {folder} (a folder per target, transcript.txt)", sep="\n",
              file=tee)
    return views
