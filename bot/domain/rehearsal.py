"""What production's plan says about the last rehearsal on staging (pure: tested by a table).

The runbook asks for a rollback to be tested in staging first. The plan of a target shows the
last run that ended on its rehearsal target — when, by whom, its result and each step's
duration — and warns, never blocks, when that rehearsal is older than `REHEARSAL_MAX_AGE`, when
there is none, or when it rehearsed something else: other bot code (`code_revision`, recorded
when a run starts) or another Alembic revision of the service (what step 2 found on the target
then, against what it finds here now). A warning is for the people approving: a rollback may
be urgent enough to go ahead anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.steps import STEP_TITLES, StepName, step_number

REHEARSAL_MAX_AGE = timedelta(days=14)


@dataclass(frozen=True)
class RehearsedStep:
    step: StepName
    status: str
    seconds: float | None  # None: it never ran (rejected, aborted before, not reached)


@dataclass(frozen=True)
class Rehearsal:
    """The last run that ended on the rehearsal target."""

    target: str
    run_id: str
    initiator_name: str
    status: str  # the run's status, e.g. completed, aborted
    started_at: datetime
    finished_at: datetime
    steps: tuple[RehearsedStep, ...]
    code_revision: str | None  # None: started before revisions were recorded
    migration_revision: str | None  # the service's Alembic revision step 2 found


def _took(seconds: float | None) -> str:
    if seconds is None:
        return "did not run"
    whole = int(seconds)
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"


def _ago(delta: timedelta) -> str:
    days = delta.days
    if days >= 1:
        return f"{days} day{'s' if days != 1 else ''} ago"
    hours = int(delta.total_seconds() // 3600)
    return f"{hours} h ago" if hours else "less than an hour ago"


def rehearsal_report(
    rehearsal_target: str, target: str, rehearsal: Rehearsal | None, now: datetime,
    code_revision: str, migration_revision: str | None,
    max_age: timedelta = REHEARSAL_MAX_AGE,
) -> tuple[list[str], list[str]]:
    """(lines, warnings) for the plan of `target`, whose rehearsals run on `rehearsal_target`;
    `migration_revision`: what step 2 finds on `target` now (None: unknown)."""
    if rehearsal is None:
        return ([f"Rehearsal on {rehearsal_target}: none recorded"],
                [f"no rehearsal on {rehearsal_target} in the last {max_age.days} days: the "
                 f"runbook asks for the rollback to be tested there before {target}"])
    when = f"{rehearsal.finished_at:%Y-%m-%d %H:%M} UTC"
    lines = [f"Last rehearsal on {rehearsal_target}: run {rehearsal.run_id[:8]} by "
             f"{rehearsal.initiator_name}, ended {when} ({_ago(now - rehearsal.finished_at)}):"
             f" {rehearsal.status.replace('_', ' ')}"]
    lines += [f"    {step_number(s.step)}. {STEP_TITLES[s.step]}: {s.status.replace('_', ' ')}"
              f", {_took(s.seconds)}" for s in rehearsal.steps]
    warnings = []
    if now - rehearsal.finished_at > max_age:
        warnings.append(f"no rehearsal on {rehearsal_target} in the last {max_age.days} days "
                        f"(the last ended {_ago(now - rehearsal.finished_at)})")
    if rehearsal.code_revision != code_revision:
        warnings.append(f"the rehearsal on {rehearsal_target} ran bot code "
                        f"{rehearsal.code_revision or 'of an unrecorded revision'}; this is "
                        f"{code_revision}")
    if migration_revision is not None and rehearsal.migration_revision != migration_revision:
        warnings.append(f"{rehearsal_target} was at migration revision "
                        f"{rehearsal.migration_revision or 'unknown'} when rehearsed; {target} "
                        f"is at {migration_revision}")
    return lines, warnings
