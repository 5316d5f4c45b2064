"""Resending step 5's unconfirmed emails: which clients, and when a Resend click may count.

A client is *unconfirmed* when step 5 is done and its ledger row still reads `sending` (the bot
stopped after the mail server accepted the recipient and before it answered DATA) or `failed`
(a resend of it failed). Nobody can tell whether it got its key: people decide. A Resend needs
two fresh approvals like a step (`decide_approval`, the same rules for the initiator), is
bound to the set of clients it names (a different set voids the approvals), and sends to
exactly those clients once more — a client may receive its key twice, which the button says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from bot.domain.approvals import Refusal
from bot.domain.fingerprint import plan_fingerprint
from bot.domain.ledgers import NotificationRecord, NotificationStatus
from bot.domain.states import RunStatus
from bot.domain.step_protocol import Outcome, OutputSink, StepContext

UNCONFIRMED = frozenset({NotificationStatus.SENDING, NotificationStatus.FAILED})
# A Resend may be asked for while the run goes on and after it ended unconfirmed.
RESENDABLE_RUN_STATUSES = frozenset({RunStatus.ACTIVE, RunStatus.COMPLETED_UNCONFIRMED})
PREFIX = 8  # how a client is named where people read: its old hash's first characters
DUPLICATES_WARNING = ("each of these clients may already have its key: resending can deliver "
                      "it twice")


def unconfirmed(records: Mapping[str, NotificationRecord]) -> list[str]:
    """The ledger ids whose delivery nobody can confirm (only meaningful once step 5 is done)."""
    return sorted(h for h, r in records.items() if r.status in UNCONFIRMED)


def prefixes(clients: Iterable[str]) -> list[str]:
    return [c[:PREFIX] for c in clients]


def resend_fingerprint(clients: Iterable[str]) -> str:
    """What approvers of a resend approve: exactly this set of clients."""
    return plan_fingerprint({"resend": sorted(clients)})


def resend_refusal(run_status: RunStatus, email_step_done: bool, clients: Sequence[str],
                   another_run_active: bool, resend_running: bool) -> Refusal | None:
    """Why a Resend cannot be asked for now, before whose click it is is looked at (that is
    `decide_approval`'s). A click after every client was confirmed (a message drawn before the
    resend, a second tap) is told there is nothing left to resend."""
    if run_status is RunStatus.ABORTED or not email_step_done or resend_running:
        return Refusal.NOT_WAITING
    if not clients:
        return Refusal.NOTHING_TO_RESEND
    if run_status not in RESENDABLE_RUN_STATUSES:
        return Refusal.NOT_WAITING
    if another_run_active:
        return Refusal.ANOTHER_RUN_ACTIVE
    return None


@runtime_checkable
class Resender(Protocol):
    """A step that can send again to named clients of its ledger (step 5)."""

    async def resend(self, ctx: StepContext, emit: OutputSink, clients: Sequence[str]
                     ) -> Outcome: ...
