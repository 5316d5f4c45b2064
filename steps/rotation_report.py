"""What step 4's key rotation has done so far, for the plans of a run that continues it and for
the thread when a run stops with the rotation still open.

A rotation is keyed by the run that began it (`StepContext.rotation_id`); a later run continues
it with the same keys and mails only the clients not yet mailed. Counts and hash-free words only:
nothing here reads a key. Both ledgers are read a page of the rotation at a time: a million
clients' pairs and records never sit in the bot's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain.ledgers import RotationProgress, add_progress, continuing_line
from bot.domain.step_protocol import StepContext
from steps.target_db import connect
from steps.target_sql import CLIENTS_STILL_PENDING_SQL, WORK_TABLE_EXISTS_SQL


@dataclass(frozen=True)
class RotationReport:
    progress: RotationProgress
    work_table: bool | None  # None: the target did not answer
    partly_keyed: int | None  # keyed clients that still own rows under their old key


PAGE = 5_000  # clients per page of the ledgers


async def progress_of(ctx: StepContext) -> RotationProgress:
    progress = RotationProgress(keyed=0, mailed=0)
    async for page in ctx.rotations.pages(ctx.rotation_id, PAGE):
        statuses = await ctx.notifications.statuses(ctx.rotation_id, list(page))
        progress = add_progress(progress, len(page), statuses.values())
    return progress


async def rotation_report(ctx: StepContext, work: str) -> RotationReport:
    progress = await progress_of(ctx)
    try:
        async with connect(ctx.settings.target_database_url.get_secret_value()) as conn:
            exists = bool(await conn.fetchval(WORK_TABLE_EXISTS_SQL, work))
            partly = 0
            async for page in ctx.rotations.pages(ctx.rotation_id, PAGE):  # clients disjoint
                partly += int(await conn.fetchval(CLIENTS_STILL_PENDING_SQL, list(page)))
    except Exception:  # the target is down or refuses: say so, never fail the stop over it
        return RotationReport(progress, None, None)
    return RotationReport(progress, exists, partly)


async def continuing(ctx: StepContext) -> tuple[str, ...]:
    """The plan line of a run that continues an earlier run's rotation (else none)."""
    if not ctx.continues_rotation:
        return ()
    return (continuing_line(ctx.rotation_id, await progress_of(ctx)),)


def left_behind_lines(ctx: StepContext, work: str, report: RotationReport) -> tuple[str, ...]:
    """What a stop leaves of the rotation, and that a new run continues it; () if nothing."""
    p = report.progress
    if not p.keyed and not report.work_table:
        return ()
    partly = (f" ({report.partly_keyed:,} of them still own rows under their old key)"
              if report.partly_keyed else "")
    others = "".join(f", {n:,} {what}" for n, what in ((p.no_contact, "without a contact"),
                                                      (p.uncertain, "uncertain (not re-sent)"))
                     if n)
    lines = [f"Left behind: the key rotation of run {ctx.rotation_id[:8]} stays open — "
             f"{p.keyed:,} clients keyed{partly}, {p.mailed:,} mailed, {p.not_mailed:,} not "
             f"mailed{others}."]
    if report.work_table is None:
        lines.append(f"Whether the work table {work} (new keys in plaintext) is still in the "
                     f"target is unknown: the target did not answer.")
    elif report.work_table:
        lines.append(f"The work table {work} (new keys in plaintext) is still in the target.")
    else:
        lines.append("No work table is left in the target.")
    if p.not_mailed and report.partly_keyed == 0:
        lines.append(f"The {p.not_mailed:,} clients not mailed have no working key until "
                     f"they are: their old keys are already dead.")
    lines.append("A new run continues this rotation: the same keys, its step 5 mails only the "
                 "clients not yet mailed, and the work table is dropped once every row "
                 "carries its key.")
    return tuple(lines)
