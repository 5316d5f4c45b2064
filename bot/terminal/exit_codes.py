"""What `rollback-bot rehearse` exits with, so that a script can tell the outcomes apart: all
confirmed, completed with deliveries nobody can confirm, or not completed. Shown in `--help`."""

from __future__ import annotations

from bot.domain.states import RunStatus
from bot.domain.views import RunView

EXIT_COMPLETED = 0  # every step done, every email recorded sent
EXIT_NOT_COMPLETED = 1  # aborted or rejected (a failed step is aborted), or it could not start
EXIT_REFUSED = 2  # refused before any run started: settings, arguments (`bot.cli`)
EXIT_UNCONFIRMED = 3  # every step done, but some clients' emails are unconfirmed
EXIT_INTERRUPTED = 130  # Ctrl-C (`bot.cli`)

EXIT_CODES_HELP = f"""exit status:
  {EXIT_COMPLETED}    completed: every step done, every email recorded sent
  {EXIT_UNCONFIRMED}    completed with N unconfirmed deliveries: every step done, but the
       bot stopped while those emails were in flight (the summary names them by
       hash prefix); a Resend (two approvals) is still owed
  {EXIT_NOT_COMPLETED}    not completed: aborted, rejected, a step failed (and was aborted),
       or the rollback could not be started or followed
  {EXIT_REFUSED}    refused before any run started: settings, arguments, or a bot
       database not migrated
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)"""


def exit_code(view: RunView | None) -> int:
    """The exit status for how the run ended (None: it never got that far)."""
    if view is None:
        return EXIT_NOT_COMPLETED
    return {RunStatus.COMPLETED: EXIT_COMPLETED,
            RunStatus.COMPLETED_UNCONFIRMED: EXIT_UNCONFIRMED}.get(view.status,
                                                                   EXIT_NOT_COMPLETED)
