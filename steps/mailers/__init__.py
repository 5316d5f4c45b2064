"""Mailer adapters: how an email leaves the bot. Errors say whether trying again can help."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Protocol

from bot.settings import MailerKind, Settings


class TransientMailError(Exception):
    """Worth another try (4xx, a dropped connection)."""


class PermanentMailError(Exception):
    """Will not get better by trying (5xx: unknown mailbox, refused)."""


class UncertainMailError(Exception):
    """The send failed after DATA had started (a timeout, a dropped connection before the
    server's answer): the server may already have delivered it. Never retried automatically;
    the client stays `sending`, i.e. uncertain, for a Resend that two people approve."""


class MarkNotWritten(Exception):
    """`before_data` could not record the client as `sending`: the message was not handed
    over, and the mailer passes this on as it is."""


# Called once the message is about to be handed over for good (for SMTP: every recipient
# accepted, just before DATA); a crash before it leaves the client safe to send again.
BeforeData = Callable[[], Awaitable[None]]


class Mailer(Protocol):
    async def send(self, message: EmailMessage, before_data: BeforeData | None = None
                   ) -> None: ...

    async def close(self) -> None: ...


def build_mailer(settings: Settings, run_id: str) -> Mailer:
    if settings.mailer is MailerKind.OUTBOX:
        from steps.mailers.outbox import OutboxMailer

        return OutboxMailer(settings.outbox_dir, run_id)
    from steps.mailers.smtp import SmtpMailer

    return SmtpMailer(settings)
