"""Step 2: Alembic downgrade to Phase 2, guarded by what `alembic_version` says before and after.

At a Phase 3 revision -> go; already at Phase 2 -> done; anything else (the withdrawn
`20260201_000007`, no table at all) -> refuse and say what was found and what was expected.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from sqlalchemy.engine import make_url

from bot.domain.step_protocol import CheckResult, Outcome, OutputSink, Plan, StepContext, StepError
from bot.domain.steps import StepName
from bot.settings import Settings
from steps.process import run_process
from steps.target_db import alembic_revision, column_exists

KEY_TABLES = ("sessions", "assistants")


def revisions_to_undo(settings: Settings, current: str | None) -> list[str]:
    """Newest first, from `current` down to the first Phase 3 revision."""
    chain = list(settings.phase3_revisions)
    if current not in chain:
        return []
    return list(reversed(chain[: chain.index(current) + 1]))


def unexpected_revision(settings: Settings, current: str | None) -> str:
    return (f"found revision {current or '(none: no alembic_version table)'}; expected one of "
            f"{', '.join(settings.phase3_revisions)} (Phase 3) or {settings.phase2_revision} "
            "(already rolled back)")


@dataclass(frozen=True)
class RevisionVerdict:
    """What step 2 makes of the target's revision: undo these, nothing to do, or refuse."""

    current: str | None
    undo: list[str]  # newest first; empty when done or refused
    already_done: bool
    refusal: str  # why step 2 refuses; empty when it would not

    @property
    def refused(self) -> bool:
        return bool(self.refusal)


def judge_revision(settings: Settings, current: str | None) -> RevisionVerdict:
    undo = revisions_to_undo(settings, current)
    done = current == settings.phase2_revision
    refusal = "" if undo or done else unexpected_revision(settings, current)
    return RevisionVerdict(current, undo, done, refusal)


async def target_revision(settings: Settings) -> RevisionVerdict:
    """The target's revision and step 2's verdict on it: the probe `check` shares."""
    return judge_revision(settings,
                          await alembic_revision(settings.target_database_url.get_secret_value()))


def child_env(settings: Settings) -> dict[str, str]:
    """What the downgrade is configured with: DOWNGRADE_ENV and the TARGET's DATABASE_URL (on
    top of the runner's minimal environment; never the bot's own DATABASE_URL or tokens)."""
    url = make_url(settings.target_database_url.get_secret_value())
    database_url = url.set(drivername=settings.downgrade_database_url_scheme)
    return {**settings.downgrade_env,
            "DATABASE_URL": database_url.render_as_string(hide_password=False)}


class DowngradeStep:
    name = StepName.DOWNGRADE

    async def plan(self, ctx: StepContext) -> Plan:
        s = ctx.settings
        verdict = await target_revision(s)
        current, undo = verdict.current, verdict.undo
        warnings: tuple[str, ...]
        if verdict.already_done:
            summary, warnings = f"already at {current}: nothing to undo", ()
        elif undo:
            summary = f"undo {len(undo)} revisions: {', '.join(undo)}"
            warnings = ()
        else:
            summary, warnings = "refused", (verdict.refusal,)
        return Plan(
            step=self.name, summary=summary,
            facts={"revision": current, "undo": undo, "command": s.downgrade_command,
                   "workdir": str(s.downgrade_workdir)},
            details=(f"`{s.downgrade_command}` in {s.downgrade_workdir}",
                     "owner_api_key comes back on sessions and assistants, all NULL"),
            warnings=warnings,
        )

    async def check(self, ctx: StepContext) -> CheckResult:
        s = ctx.settings
        url = s.target_database_url.get_secret_value()
        current = await alembic_revision(url)
        if current != s.phase2_revision:
            return CheckResult(False, f"target at {current}, not {s.phase2_revision}")
        for table in KEY_TABLES:
            if not await column_exists(url, table, "owner_api_key"):
                return CheckResult(False, f"{table}.owner_api_key is missing")
        return CheckResult(True, f"target at {current} with owner_api_key on both tables")

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        s = ctx.settings
        url = s.target_database_url.get_secret_value()
        verdict = await target_revision(s)
        before, undo = verdict.current, verdict.undo
        if not undo:
            raise StepError(unexpected_revision(s, before))
        emit(f"target at {before}; undoing {', '.join(undo)}")
        # DATABASE_URL (with its password) goes only into the child's environment.
        result = await run_process(shlex.split(s.downgrade_command), emit=emit,
                                   cwd=s.downgrade_workdir, env=child_env(s))
        after = await alembic_revision(url)
        if result.returncode != 0:
            raise StepError(f"downgrade command failed (exit {result.returncode}); target now at "
                            f"{after}: " + " | ".join(result.tail[-3:]))
        check = await self.check(ctx)
        if not check.done:
            raise StepError(f"downgrade finished but the target is not at Phase 2: {check.reason}")
        emit(f"target now at {after}; owner_api_key present on {', '.join(KEY_TABLES)}")
        return Outcome(summary=f"revision {before} -> {after}",
                       facts={"revision_before": before, "revision_after": after,
                              "undone": undo})
