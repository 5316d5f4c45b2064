"""Mailer adapters: how an email leaves the bot. Errors say whether trying again can help."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol

from bot.settings import MailerKind, Settings


class TransientMailError(Exception):
    """Worth another try (4xx, a dropped connection)."""


class PermanentMailError(Exception):
    """Will not get better by trying (5xx: unknown mailbox, refused)."""


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...

    async def close(self) -> None: ...


def build_mailer(settings: Settings, run_id: str) -> Mailer:
    if settings.mailer is MailerKind.OUTBOX:
        from steps.mailers.outbox import OutboxMailer

        return OutboxMailer(settings.outbox_dir, run_id)
    from steps.mailers.smtp import SmtpMailer

    return SmtpMailer(settings)
